"""Model code: our own models over the paged KV cache (`registry`: the Llama family, i.e. the
R1 distills), their kernels (`kernels`), and a transformers fallback (`hf_fallback`, imported
on demand) for any other architecture."""
