// What a model and an engine's context will take on each device, measured by llama.cpp itself
// (a load with no_alloc: metadata only, every buffer sized but none allocated), and the
// placement llama.cpp's fit (common/fit.h, llama-server's --fit) finds for GPU_LAYERS=auto.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine_core.h"
#include "llama.h"
#include "model.h"

namespace lmserve {

// One device's share: what it has (free, total) and what the model, the context (KV cache,
// outputs) and the compute buffers take on it.
struct DeviceMemory {
  std::string name;         // ggml device name ("CUDA0"); "CPU" for host memory
  std::string description;  // e.g. the GPU's product name
  std::string backend;      // the backend that drives it ("CUDA", "Metal", "CPU")
  std::string type;         // "gpu", "igpu", "accel" or "cpu"
  int64_t free = 0;
  int64_t total = 0;
  uint64_t model = 0;
  uint64_t context = 0;
  uint64_t compute = 0;
};

struct Measurement {
  std::vector<DeviceMemory> devices;  // the GPU-like devices the model would use, in llama.cpp's order
  DeviceMemory host;                  // host memory (CPU and host-pinned buffers)
  // The placement the measurement is for: the options it was given, or the fit's.
  LoadOptions placement;
  int32_t gpuLayers = 0;  // layers on GPU devices (llama.cpp's count: repeating layers + output)
  int32_t layers = 0;     // the model's repeating layers + its output layer
  // "off": GPU_LAYERS was a number, or no GPU device; else the fit's status ("success",
  // "failure": even the smallest placement does not fit the devices).
  std::string fit = "off";
};

// Measures `path` loaded with `load` under an engine with `engine`. With load.gpuLayers < 0
// and a GPU-like device, llama.cpp's fit first chooses the layers, split and host-kept tensors
// that leave `marginBytes` free on each device for `replicas` contexts. Throws CodedError.
Measurement MeasureModel(const std::string& path, const LoadOptions& load, const EngineOptions& engine,
                         int32_t replicas, int64_t marginBytes);

// What a live context holds, per device (host memory last), as llama.cpp accounts it.
std::vector<DeviceMemory> ContextMemory(const llama_context* ctx);

// Whether this build sees a GPU (or integrated GPU) device.
bool HasGpu();

// {name, description, backend, type, freeBytes, totalBytes, modelBytes, contextBytes, computeBytes}
Napi::Object DeviceMemoryJs(Napi::Env env, const DeviceMemory& d);

// {gpuLayers, useMmap, tensorSplit, cpuTensors} from JS; throws INVALID_REQUEST naming the field.
LoadOptions ParseLoadPlacement(Napi::Env env, Napi::Value value);

// measureModel(path, load?, engine?, {replicas, marginBytes}?) -> {devices, host, gpuLayers,
// layers, fit, tensorSplit, cpuTensors}. Synchronous: for a process that does nothing else.
Napi::Value MeasureModelJs(const Napi::CallbackInfo& info);

}  // namespace lmserve
