"""Model folder formats gpt2kit reads and writes: Hugging Face folders (`hf.py`): `config.json`,
`model.safetensors` and the tokenizer files, loaded from a path, a run folder or the hub cache;
and PEFT's LoRA adapter folders (`peft.py`), applied to the base model they record."""
