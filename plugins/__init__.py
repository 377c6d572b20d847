"""samedge.plugins: TensorRT plugins (C++/CUDA) for samedge's custom ONNX nodes."""
