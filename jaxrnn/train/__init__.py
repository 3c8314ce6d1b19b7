"""Training recurrent models with optax: `jaxrnn.train`.

Lives here: the train and eval steps (`step.py`), sequence losses and
metrics (`losses.py`), the loop with its progress bar (`loop.py`), truncated
backpropagation through time (`tbptt.py`), data parallelism (`parallel.py`),
checkpoints (`checkpoint.py`), the learning rate cut on a plateau of an
evaluated metric (`plateau.py`) and padded batches of sequences of
different lengths (`padding.py`). Not here: the tasks (`jaxrnn.tasks`) and
the cells.

The convention everywhere: a loss is written for ONE example and returns
``(loss_sum, count, metric_sums)``; a batch's loss is ``sum(loss_sum) /
sum(count)``, so a mean over padded steps counts only valid ones, exactly.
"""

from jaxrnn.train.checkpoint import Checkpoints as Checkpoints
from jaxrnn.train.loop import early_stopping as early_stopping
from jaxrnn.train.loop import fit as fit
from jaxrnn.train.losses import accuracy as accuracy
from jaxrnn.train.losses import cross_entropy as cross_entropy
from jaxrnn.train.losses import last_step_cross_entropy as last_step_cross_entropy
from jaxrnn.train.losses import last_valid as last_valid
from jaxrnn.train.losses import mse as mse
from jaxrnn.train.parallel import data_mesh as data_mesh
from jaxrnn.train.parallel import replicate as replicate
from jaxrnn.train.padding import pad_batch as pad_batch
from jaxrnn.train.parallel import shard_batch as shard_batch
from jaxrnn.train.plateau import PlateauState as PlateauState
from jaxrnn.train.plateau import plateau_scales as plateau_scales
from jaxrnn.train.plateau import plateau_step as plateau_step
from jaxrnn.train.plateau import reduce_lr_on_plateau as reduce_lr_on_plateau
from jaxrnn.train.step import TrainState as TrainState
from jaxrnn.train.step import batch_loss as batch_loss
from jaxrnn.train.step import init_state as init_state
from jaxrnn.train.step import make_eval_step as make_eval_step
from jaxrnn.train.step import make_train_step as make_train_step
from jaxrnn.train.step import optimizer as optimizer
from jaxrnn.train.tbptt import carry_in_state as carry_in_state
from jaxrnn.train.tbptt import make_tbptt_step as make_tbptt_step
from jaxrnn.train.tbptt import windows as windows
