"""Tasks that need memory: generators, data, and the model they train.

Every generator is a pure function of a PRNG key that returns a batch
``(xs [B, T, I], targets)``; nothing is downloaded.

* `adding`: the adding problem (Hochreiter & Schmidhuber 1997), MSE.
* `recall`: name at the end the symbol seen at the start (Colah's
  "I grew up in France ... I speak fluent French").
* `copy_memory`: copy ten symbols after a delay (Arjovsky et al. 2016).
* `sequential_digits`: scikit-learn's 8x8 digits, one pixel per step.
* `reference_text`, `Vocab`, `split_tokens`: a character corpus shipped
  with Python and its encoding (`jaxrnn.train.windows` lays it out for
  TBPTT).
* `readout_model`: a recurrent layer plus a linear readout, for all of them;
  `generate` continues a prompt with a language model built from one, and
  `rollout` a real-valued series, feeding each prediction back.
* `language_model`: token ids through an embedding, a recurrent layer and a
  readout (tied to the embedding, or not), with its TBPTT loss and its
  held-out perplexity.
"""

from jaxrnn.tasks.adding import ADDING_BASELINE_MSE as ADDING_BASELINE_MSE
from jaxrnn.tasks.adding import ADDING_SOLVED_MSE as ADDING_SOLVED_MSE
from jaxrnn.tasks.adding import adding as adding
from jaxrnn.tasks.copy_memory import COPY_VOCAB as COPY_VOCAB
from jaxrnn.tasks.copy_memory import copy_memory as copy_memory
from jaxrnn.tasks.copy_memory import copy_memory_baseline as copy_memory_baseline
from jaxrnn.tasks.corpus import Vocab as Vocab
from jaxrnn.tasks.corpus import reference_text as reference_text
from jaxrnn.tasks.corpus import split_tokens as split_tokens
from jaxrnn.tasks.digits import DIGITS_CLASSES as DIGITS_CLASSES
from jaxrnn.tasks.digits import Split as Split
from jaxrnn.tasks.digits import sequential_digits as sequential_digits
from jaxrnn.tasks.language_model import LanguageModel as LanguageModel
from jaxrnn.tasks.language_model import LanguageModelParams as LanguageModelParams
from jaxrnn.tasks.language_model import language_model as language_model
from jaxrnn.tasks.model import Model as Model
from jaxrnn.tasks.model import ModelParams as ModelParams
from jaxrnn.tasks.model import generate as generate
from jaxrnn.tasks.model import last_step_classification_loss as last_step_classification_loss
from jaxrnn.tasks.model import param_count as param_count
from jaxrnn.tasks.model import readout_model as readout_model
from jaxrnn.tasks.model import rollout as rollout
from jaxrnn.tasks.recall import recall as recall
