#include "placement.h"

#include <algorithm>
#include <stdexcept>

#include "engine.h"
#include "errors.h"
#include "fit.h"  // llama.cpp common/fit.h
#include "../src/llama-ext.h"
#include "log_capture.h"

namespace lmserve {

namespace {

const char* TypeName(ggml_backend_dev_t dev) {
  switch (ggml_backend_dev_type(dev)) {
    case GGML_BACKEND_DEVICE_TYPE_GPU:
      return "gpu";
    case GGML_BACKEND_DEVICE_TYPE_IGPU:
      return "igpu";
    case GGML_BACKEND_DEVICE_TYPE_ACCEL:
      return "accel";
    default:
      return "cpu";
  }
}

DeviceMemory Describe(ggml_backend_dev_t dev) {
  DeviceMemory d;
  d.name = ggml_backend_dev_name(dev);
  d.description = ggml_backend_dev_description(dev);
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
  d.backend = reg != nullptr ? ggml_backend_reg_name(reg) : d.name;
  d.type = TypeName(dev);
  return d;
}

DeviceMemory HostMemory() {
  DeviceMemory host;
  host.name = "CPU";
  host.backend = "CPU";
  host.type = "cpu";
  ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  if (cpu != nullptr) host.description = ggml_backend_dev_description(cpu);
  return host;
}

struct Measured {
  std::vector<DeviceMemory> devices;
  DeviceMemory host;
  uint32_t repeatingLayers = 0;
};

// One no_alloc load of model and context; throws INVALID_MODEL_FILE with llama.cpp's reason.
Measured Measure(const std::string& path, const llama_model_params& mparams, const llama_context_params& cparams) {
  std::vector<ggml_backend_dev_t> devs;
  uint32_t layers = 0, nCtxTrain = 0, nExpert = 0;
  common_device_memory_data_vec data;
  LogCapture capture;
  try {
    data = common_get_device_memory_data(path.c_str(), &mparams, &cparams, devs, layers, nCtxTrain, nExpert,
                                         GGML_LOG_LEVEL_ERROR);
  } catch (const std::exception& e) {
    std::string reason = capture.Tail(3);
    throw CodedError(codes::kInvalidModelFile,
                     "failed to measure " + path + ": " + (reason.empty() ? std::string(e.what()) : reason));
  }
  Measured m;
  m.repeatingLayers = layers;
  for (size_t i = 0; i < data.size(); ++i) {
    DeviceMemory d = i + 1 < data.size() && i < devs.size() ? Describe(devs[i]) : HostMemory();
    d.free = data[i].free;
    d.total = data[i].total;
    d.model = data[i].model;
    d.context = data[i].context;
    d.compute = data[i].compute;
    if (i + 1 < data.size()) {
      m.devices.push_back(std::move(d));
    } else {
      m.host = std::move(d);
    }
  }
  return m;
}

}  // namespace

bool HasGpu() {
  for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
    const auto type = ggml_backend_dev_type(ggml_backend_dev_get(i));
    if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) return true;
  }
  return false;
}

Measurement MeasureModel(const std::string& path, const LoadOptions& load, const EngineOptions& engine,
                         int32_t replicas, int64_t marginBytes) {
  CheckModelFile(path);
  Measurement out;
  out.placement = load;
  out.placement.vocabOnly = false;
  llama_context_params cparams = ContextParams(engine);
  const bool fit = load.gpuLayers < 0 && load.tensorSplit.empty() && load.cpuTensors.empty() && HasGpu();
  if (fit) {
    ModelParams built(out.placement);
    std::vector<size_t> margins(std::max<size_t>(1, llama_max_devices()), static_cast<size_t>(std::max<int64_t>(0, marginBytes)));
    if (replicas > 1) {
      // The fit sizes one context; the other replicas' contexts are held back from each device.
      Measured all = Measure(path, built.params, cparams);
      for (size_t i = 0; i < all.devices.size() && i < margins.size(); ++i) {
        margins[i] += static_cast<size_t>(replicas - 1) * (all.devices[i].context + all.devices[i].compute);
      }
    }
    std::vector<float> split(llama_max_devices(), 0.0f);
    std::vector<llama_model_tensor_buft_override> overrides(llama_max_tensor_buft_overrides(), {nullptr, nullptr});
    llama_model_params mparams = built.params;
    common_params_fit_status status;
    {
      LogCapture quiet;
      status = common_fit_params(path.c_str(), &mparams, &cparams, split.data(), overrides.data(), margins.data(),
                                 cparams.n_ctx, nullptr, GGML_LOG_LEVEL_ERROR);
    }
    if (status == COMMON_PARAMS_FIT_STATUS_ERROR) {
      throw CodedError(codes::kInvalidModelFile, "llama.cpp's fit could not measure " + path);
    }
    out.fit = status == COMMON_PARAMS_FIT_STATUS_SUCCESS ? "success" : "failure";
    out.placement.gpuLayers = mparams.n_gpu_layers;
    if (mparams.tensor_split != nullptr) {
      out.placement.tensorSplit.assign(split.begin(), split.end());
      while (!out.placement.tensorSplit.empty() && out.placement.tensorSplit.back() == 0.0f) {
        out.placement.tensorSplit.pop_back();
      }
    }
    if (mparams.tensor_buft_overrides != nullptr) {
      for (const auto* o = mparams.tensor_buft_overrides; o->pattern != nullptr; ++o) {
        // The fit moves tensors off a device into host memory only (its overflow buffer type).
        out.placement.cpuTensors.emplace_back(o->pattern);
      }
    }
  }
  ModelParams placed(out.placement);
  Measured m = Measure(path, placed.params, cparams);
  out.devices = std::move(m.devices);
  out.host = std::move(m.host);
  out.layers = static_cast<int32_t>(m.repeatingLayers) + 1;
  const int32_t asked = out.placement.gpuLayers < 0 ? out.layers : out.placement.gpuLayers;
  out.gpuLayers = out.devices.empty() ? 0 : std::min(asked, out.layers);
  return out;
}

std::vector<DeviceMemory> ContextMemory(const llama_context* ctx) {
  const llama_model* model = llama_get_model(ctx);
  const int32_t nd = llama_model_n_devices(model);
  std::vector<DeviceMemory> out;
  for (int32_t i = 0; i < nd; ++i) out.push_back(Describe(llama_model_get_device(model, i)));
  out.push_back(HostMemory());
  for (const auto& [buft, mb] : llama_get_memory_breakdown(ctx)) {
    DeviceMemory* d = &out.back();
    if (!ggml_backend_buft_is_host(buft)) {
      ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
      for (int32_t i = 0; i < nd; ++i) {
        if (dev == llama_model_get_device(model, i)) d = &out[static_cast<size_t>(i)];
      }
    }
    d->model += mb.model;
    d->context += mb.context;
    d->compute += mb.compute;
  }
  return out;
}

Napi::Object DeviceMemoryJs(Napi::Env env, const DeviceMemory& d) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", d.name);
  o.Set("description", d.description);
  o.Set("backend", d.backend);
  o.Set("type", d.type);
  o.Set("freeBytes", Napi::Number::New(env, static_cast<double>(d.free)));
  o.Set("totalBytes", Napi::Number::New(env, static_cast<double>(d.total)));
  o.Set("modelBytes", Napi::Number::New(env, static_cast<double>(d.model)));
  o.Set("contextBytes", Napi::Number::New(env, static_cast<double>(d.context)));
  o.Set("computeBytes", Napi::Number::New(env, static_cast<double>(d.compute)));
  return o;
}

LoadOptions ParseLoadPlacement(Napi::Env env, Napi::Value value) {
  LoadOptions o;
  if (!value.IsObject()) return o;
  Napi::Object obj = value.As<Napi::Object>();
  Napi::Value layers = obj.Get("gpuLayers");
  if (layers.IsNumber()) {
    double d = layers.As<Napi::Number>().DoubleValue();
    if (!(d >= -1 && d <= 100000) || static_cast<int32_t>(d) != d) {
      ThrowCoded(env, codes::kInvalidRequest, "load.gpuLayers must be an integer from -1 (auto)", "load.gpuLayers");
    }
    o.gpuLayers = static_cast<int32_t>(d);
  }
  if (obj.Get("useMmap").IsBoolean()) o.useMmap = obj.Get("useMmap").As<Napi::Boolean>().Value();
  Napi::Value split = obj.Get("tensorSplit");
  if (split.IsArray()) {
    Napi::Array a = split.As<Napi::Array>();
    if (a.Length() > llama_max_devices()) {
      ThrowCoded(env, codes::kInvalidRequest, "load.tensorSplit has more entries than devices", "load.tensorSplit");
    }
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Value v = a.Get(i);
      if (!v.IsNumber() || !(v.As<Napi::Number>().DoubleValue() >= 0)) {
        ThrowCoded(env, codes::kInvalidRequest, "load.tensorSplit must be non-negative numbers", "load.tensorSplit");
      }
      o.tensorSplit.push_back(v.As<Napi::Number>().FloatValue());
    }
  }
  Napi::Value cpu = obj.Get("cpuTensors");
  if (cpu.IsArray()) {
    Napi::Array a = cpu.As<Napi::Array>();
    if (a.Length() + 1 > llama_max_tensor_buft_overrides()) {
      ThrowCoded(env, codes::kInvalidRequest, "load.cpuTensors has too many patterns", "load.cpuTensors");
    }
    for (uint32_t i = 0; i < a.Length(); ++i) {
      if (!a.Get(i).IsString()) ThrowCoded(env, codes::kInvalidRequest, "load.cpuTensors must be strings", "load.cpuTensors");
      o.cpuTensors.push_back(a.Get(i).As<Napi::String>().Utf8Value());
    }
  }
  return o;
}

Napi::Value MeasureModelJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    ThrowCoded(env, codes::kInvalidRequest, "measureModel(path, load?, engine?, {replicas, marginBytes}?)", "path");
  }
  LoadOptions load = ParseLoadPlacement(env, info.Length() > 1 ? info[1] : env.Undefined());
  EngineOptions engine = ParseEngineOptions(env, info.Length() > 2 ? info[2] : env.Undefined());
  int32_t replicas = 1;
  int64_t margin = 1024LL * 1024 * 1024;
  if (info.Length() > 3 && info[3].IsObject()) {
    Napi::Object o = info[3].As<Napi::Object>();
    if (o.Get("replicas").IsNumber()) replicas = std::clamp(o.Get("replicas").As<Napi::Number>().Int32Value(), 1, 64);
    if (o.Get("marginBytes").IsNumber()) margin = std::max<int64_t>(0, o.Get("marginBytes").As<Napi::Number>().Int64Value());
  }
  Measurement m = MeasureModel(info[0].As<Napi::String>().Utf8Value(), load, engine, replicas, margin);
  Napi::Object o = Napi::Object::New(env);
  Napi::Array devices = Napi::Array::New(env, m.devices.size());
  for (size_t i = 0; i < m.devices.size(); ++i) devices.Set(static_cast<uint32_t>(i), DeviceMemoryJs(env, m.devices[i]));
  o.Set("devices", devices);
  o.Set("host", DeviceMemoryJs(env, m.host));
  o.Set("gpuLayers", m.gpuLayers);
  o.Set("layers", m.layers);
  o.Set("fit", m.fit);
  Napi::Array split = Napi::Array::New(env, m.placement.tensorSplit.size());
  for (size_t i = 0; i < m.placement.tensorSplit.size(); ++i) {
    split.Set(static_cast<uint32_t>(i), Napi::Number::New(env, m.placement.tensorSplit[i]));
  }
  o.Set("tensorSplit", split);
  Napi::Array cpu = Napi::Array::New(env, m.placement.cpuTensors.size());
  for (size_t i = 0; i < m.placement.cpuTensors.size(); ++i) cpu.Set(static_cast<uint32_t>(i), m.placement.cpuTensors[i]);
  o.Set("cpuTensors", cpu);
  // What to load with: the placement's layer count (-1 stays "llama.cpp's default").
  o.Set("loadGpuLayers", m.placement.gpuLayers);
  return o;
}

}  // namespace lmserve
