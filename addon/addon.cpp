// Registers the addon's classes. llama.cpp's backends are initialised once per process, however
// many worker threads load the addon.
#include <napi.h>

#include <mutex>

#include "engine.h"
#include "env_registry.h"
#include "log_capture.h"
#include "model.h"
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
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsString()) {
    throw Napi::TypeError::New(env, "checkGrammar(model, grammar, root?)");
  }
  auto* model = Napi::ObjectWrap<AddonModel>::Unwrap(info[0].As<Napi::Object>());
  std::string root = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "root";
  std::string reason = CheckGrammar(model->Handle(env)->vocab(), info[1].As<Napi::String>().Utf8Value(), root);
  return reason.empty() ? env.Null() : Napi::Value(Napi::String::New(env, reason));
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
  exports.Set("systemInfo", Napi::Function::New(env, SystemInfo));
  exports.Set("checkGrammar", Napi::Function::New(env, CheckGrammarJs));
  exports.Set("jsonSchemaToGrammar", Napi::Function::New(env, JsonSchemaToGrammarJs));
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
