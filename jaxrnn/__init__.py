"""jaxrnn: recurrent networks as pure functions over parameter pytrees.

A `Cell` is one time step (``init``, ``initial_carry``, ``step``,
``project``); `scan` runs it over a sequence with `jax.lax.scan` (`scan_batch`
over a batch, on the batched fast path); `rnn`,
`bidirectional` and `stack` build whole-sequence layers (`Seq`; `apply_batch`
runs one over a batch on that path);
`attention` and `attention_decoder` let a decoder look at every encoder state
(`jaxrnn.seq2seq` builds the whole model). Batches come from `jax.vmap`,
training from optax (`jaxrnn.train`).

Importing jaxrnn sets glibc's malloc for the whole process so that XLA's
CPU calls reuse their large buffers instead of mapping them afresh
(`tune_malloc`; ``JAXRNN_TUNE_MALLOC=0`` opts out; `malloc_tuning` says
what was done).
"""

from jaxrnn import io as io
from jaxrnn._cell import Cell as Cell
from jaxrnn._cell import carry_dtype as carry_dtype
from jaxrnn._cell import matmul as matmul
from jaxrnn._cell import unfused as unfused
from jaxrnn._cell import with_compute_dtype as with_compute_dtype
from jaxrnn._cells.attention import Attention as Attention
from jaxrnn._cells.attention import AttentionParams as AttentionParams
from jaxrnn._cells.attention import DecoderCarry as DecoderCarry
from jaxrnn._cells.attention import DecoderParams as DecoderParams
from jaxrnn._cells.attention import attention as attention
from jaxrnn._cells.attention import attention_decoder as attention_decoder
from jaxrnn._cells.gru import GRUParams as GRUParams
from jaxrnn._cells.gru import gru as gru
from jaxrnn._cells.lstm import LSTMCarry as LSTMCarry
from jaxrnn._cells.lstm import LSTMParams as LSTMParams
from jaxrnn._cells.lstm import cifg_lstm as cifg_lstm
from jaxrnn._cells.lstm import lstm as lstm
from jaxrnn._cells.lstm import peephole_lstm as peephole_lstm
from jaxrnn._cells.rnn import RNNParams as RNNParams
from jaxrnn._cells.rnn import simple_rnn as simple_rnn
from jaxrnn._fused import fused_cell as fused_cell
from jaxrnn._layers import Seq as Seq
from jaxrnn._layers import apply_batch as apply_batch
from jaxrnn._layers import bidirectional as bidirectional
from jaxrnn._layers import rnn as rnn
from jaxrnn._layers import stack as stack
from jaxrnn._malloc import malloc_tuning as malloc_tuning
from jaxrnn._malloc import tune_malloc as tune_malloc
from jaxrnn._scan import default_unroll as default_unroll
from jaxrnn._scan import scan as scan
from jaxrnn._scan_batch import scan_batch as scan_batch
from jaxrnn._trace import record as record
from jaxrnn._trace import trace as trace

__version__ = "0.1.0"

tune_malloc()   # XLA's CPU buffers reused, not re-mapped each call: see jaxrnn._malloc
