"""Private helpers shared by every op of :mod:`pallas_kernels` (delta_rule, linear_attention, mlstm).

Nothing here is specific to one op's math; each module exists so that the ops do not write it twice:

* ``checks``: argument validation that names the wrong argument, and the accumulation dtype.
* ``dispatch``: the backend registry and the ``backend="auto"`` policy (public as ``pallas_kernels.dispatch``).
* ``chunking``: cutting the time axis into chunks (sizes, padding, segment resets, chunk-local gates) and the
  block primitives the per-chunk math of every op is written in.
* ``pallas``: grid geometry, BlockSpecs and compiler settings shared by the Pallas kernels.
* ``vma``: shard_map support (values that must vary over the same mesh axes as the data).
* ``vjp``: the one ``jax.custom_vjp`` construction every chunked and Pallas backend uses.
"""
