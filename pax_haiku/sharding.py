"""`pax.sharding`: data-parallel and multi-host training on `jax.sharding`.

See `pax_haiku._src.sharding` for the recipe (meshes are made in
`pax_haiku._src.mesh`, multi-process jobs joined in
`pax_haiku._src.distributed`) and docs/scaling.md for the training binary's
flags and measured scaling.

>>> sorted(pax.sharding.__all__)[:3]
['DATA_AXIS', 'batch_sharding', 'check_batch_size']
"""

from pax_haiku._src.distributed import initialize_distributed
from pax_haiku._src.mesh import batch_sharding
from pax_haiku._src.mesh import check_batch_size
from pax_haiku._src.mesh import DATA_AXIS
from pax_haiku._src.mesh import make_mesh
from pax_haiku._src.mesh import replicated_sharding
from pax_haiku._src.sharding import replicate
from pax_haiku._src.sharding import shard_batch
from pax_haiku._src.sharding import shard_params
from pax_haiku._src.sharding import shardings_of
from pax_haiku._src.sharding import to_host

__all__ = (
    "batch_sharding",
    "check_batch_size",
    "DATA_AXIS",
    "initialize_distributed",
    "make_mesh",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "shard_params",
    "shardings_of",
    "to_host",
)
