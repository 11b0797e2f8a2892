"""`gpt2kit export`: a model as a file another runtime loads (GGUF for llama.cpp, ONNX for
ONNX Runtime) or as a Hugging Face folder."""
