// Registers the addon's classes. llama.cpp's backends are initialised once per process, however
// many worker threads load the addon.
#include <napi.h>

#include <cmath>
#include <mutex>

#if defined(__linux__)
#include <sys/resource.h>
#endif

#include "engine.h"
#include "env_registry.h"
#include "log_capture.h"
#include "model.h"
#include "placement.h"
#include "sampling.h"
#include "errors.h"
#include "json-schema-to-grammar.h"
#include "log.h"

namespace lmserve {

namespace {
std::once_flag gBackendOnce;

Napi::Value SystemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("llamaSystemInfo", llama_print_system_info());
  o.Set("supportsGpuOffload", llama_supports_gpu_offload());
  o.Set("supportsMmap", llama_supports_mmap());
  Napi::Array devices = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
    ggml_backend_dev_t dev = ggml_backend_dev_get(i);
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", ggml_backend_dev_name(dev));
    d.Set("description", ggml_backend_dev_description(dev));
    devices.Set(static_cast<uint32_t>(i), d);
  }
  o.Set("devices", devices);
  return o;
}

// checkGrammar(vocabModel: Model, grammar, root?) -> null | reason
Napi::Value CheckGrammarJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsString() ||
      !info[0].As<Napi::Object>().InstanceOf(EnvRegistry::For(env).modelConstructor.Value())) {
    throw Napi::TypeError::New(env, "checkGrammar(model, grammar, root?)");
  }
  auto* model = Napi::ObjectWrap<AddonModel>::Unwrap(info[0].As<Napi::Object>());
  std::string root = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "root";
  std::string reason = CheckGrammar(model->Handle(env)->vocab(), info[1].As<Napi::String>().Utf8Value(), root);
  return reason.empty() ? env.Null() : Napi::Value(Napi::String::New(env, reason));
}

// inspectGrammar(vocabModel: Model, grammar, root?) -> {valid, verdict, reason, rules,
// alternatives, width, widestRule, maxWidth}: checkGrammar's verdict with the grammar's size
// and width (sampling.h) against the width limit in force.
Napi::Value InspectGrammarJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsString() ||
      !info[0].As<Napi::Object>().InstanceOf(EnvRegistry::For(env).modelConstructor.Value())) {
    throw Napi::TypeError::New(env, "inspectGrammar(model, grammar, root?)");
  }
  auto* model = Napi::ObjectWrap<AddonModel>::Unwrap(info[0].As<Napi::Object>());
  std::string root = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "root";
  GrammarReport r = AnalyzeGrammar(model->Handle(env)->vocab(), info[1].As<Napi::String>().Utf8Value(), root);
  Napi::Object o = Napi::Object::New(env);
  const char* verdict = "valid";
  switch (r.verdict) {
    case GrammarReport::Verdict::Valid: verdict = "valid"; break;
    case GrammarReport::Verdict::Syntax: verdict = "syntax"; break;
    case GrammarReport::Verdict::Unsupported: verdict = "unsupported"; break;
    case GrammarReport::Verdict::TooComplex: verdict = "too-complex"; break;
  }
  o.Set("valid", r.verdict == GrammarReport::Verdict::Valid);
  o.Set("verdict", verdict);
  o.Set("reason", r.reason.empty() ? env.Null() : Napi::Value(Napi::String::New(env, r.reason)));
  o.Set("rules", Napi::Number::New(env, static_cast<double>(r.rules)));
  o.Set("alternatives", Napi::Number::New(env, static_cast<double>(r.alternatives)));
  o.Set("width", Napi::Number::New(env, static_cast<double>(r.width)));
  o.Set("widestRule", r.widestRule.empty() ? env.Null() : Napi::Value(Napi::String::New(env, r.widestRule)));
  o.Set("maxWidth", Napi::Number::New(env, static_cast<double>(r.maxWidth)));
  return o;
}

// jsonSchemaToGrammar(schemaJson: string) -> GBNF string (llama.cpp's common converter)
Napi::Value JsonSchemaToGrammarJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "jsonSchemaToGrammar(schemaJson)");
  try {
    auto schema = common_json::parse(info[0].As<Napi::String>().Utf8Value());
    return Napi::String::New(env, json_schema_to_grammar(schema));
  } catch (const std::exception& e) {
    ThrowCoded(env, codes::kInvalidRequest, std::string("json_schema cannot be converted: ") + e.what());
  }
}

// errorCodes() -> [{code, status}]: every code the addon raises (kErrorCodes in errors.h).
Napi::Value ErrorCodesJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  constexpr size_t n = sizeof(kErrorCodes) / sizeof(kErrorCodes[0]);
  Napi::Array out = Napi::Array::New(env, n);
  for (size_t i = 0; i < n; ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("code", kErrorCodes[i].code);
    o.Set("status", kErrorCodes[i].status);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// externalMemory() -> number: V8's count of external memory reported through
// AdjustExternalMemory on this thread's isolate (the models' weights and the engines' KV
// caches). Node 20's process.memoryUsage().external leaves that count out (it sums the
// ArrayBuffer backing stores), so this is where the reports can be read back.
Napi::Value ExternalMemoryJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Napi::Number::New(env, static_cast<double>(Napi::MemoryManagement::AdjustExternalMemory(env, 0)));
}

// setMemoryLimit(bytes) -> boolean: caps this process's address space (the soft RLIMIT_AS), so
// a process that parses untrusted input (a grammar checker) fails an allocation instead of
// exhausting the machine. 0 lifts the soft limit back to the hard one. Linux only: elsewhere
// it changes nothing and returns false; it also returns false when the kernel refuses (a limit
// above the hard limit).
Napi::Value SetMemoryLimitJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double bytes = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(bytes >= 0) || std::floor(bytes) != bytes || bytes > 9007199254740991.0) {
    ThrowCoded(env, codes::kInvalidRequest, "setMemoryLimit(bytes): bytes must be a non-negative integer", "bytes");
  }
#if defined(__linux__)
  struct rlimit limit;
  if (getrlimit(RLIMIT_AS, &limit) != 0) return Napi::Boolean::New(env, false);
  limit.rlim_cur = bytes == 0 ? limit.rlim_max : static_cast<rlim_t>(bytes);
  return Napi::Boolean::New(env, setrlimit(RLIMIT_AS, &limit) == 0);
#else
  return Napi::Boolean::New(env, false);
#endif
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  std::call_once(gBackendOnce, []() {
    InstallLogHandler();
    // llama.cpp's common library logs through its own worker thread; the failures it reports
    // (e.g. a chat template Jinja cannot parse) reach callers as errors, so discard that log.
    common_log_pause(common_log_main());
    llama_backend_init();
  });
  EnvRegistry::For(env);
  AddonModel::Init(env, exports);
  AddonModelLoader::Init(env, exports);
  AddonEngine::Init(env, exports);
  // Every function goes through Coded<>: a CodedError reaches JS with its code (errors.h).
  exports.Set("systemInfo", Napi::Function::New(env, Coded<SystemInfo>));
  exports.Set("checkGrammar", Napi::Function::New(env, Coded<CheckGrammarJs>));
  exports.Set("measureModel", Napi::Function::New(env, Coded<MeasureModelJs>));
  exports.Set("inspectGrammar", Napi::Function::New(env, Coded<InspectGrammarJs>));
  exports.Set("jsonSchemaToGrammar", Napi::Function::New(env, Coded<JsonSchemaToGrammarJs>));
  exports.Set("paramSpecs", Napi::Function::New(env, Coded<ParamSpecsJs>));
  exports.Set("errorCodes", Napi::Function::New(env, Coded<ErrorCodesJs>));
  exports.Set("setMemoryLimit", Napi::Function::New(env, Coded<SetMemoryLimitJs>));
  exports.Set("externalMemory", Napi::Function::New(env, Coded<ExternalMemoryJs>));
  return exports;
}

}  // namespace lmserve

// A worker thread terminated while it loads the addon makes every N-API call in Init fail; the
// exception must not reach node-addon-api's registration wrapper, whose re-throw would abort
// the whole process. The env is going away, so there is nothing left to initialise.
static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  try {
    return lmserve::Init(env, exports);
  } catch (...) {
    return exports;
  }
}

NODE_API_MODULE(lmserve, InitAddon)
