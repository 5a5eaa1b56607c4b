#include "model.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "engine.h"
#include "env_registry.h"
#include "errors.h"
#include "log_capture.h"
#include "placement.h"
#include "chat.h"

namespace lmserve {

// ---------------------------------------------------------------------------------------------
// ModelHandle and the process-wide registry

ModelHandle::ModelHandle(llama_model* model, std::string path, uint64_t fileSize, bool vocabOnly)
    : model_(model), path_(std::move(path)), fileSize_(fileSize), vocabOnly_(vocabOnly) {}

ModelHandle::~ModelHandle() {
  templates_.reset();
  grammarCache_.Clear();  // the prototypes refer to the model's vocabulary
  llama_model_free(model_);
}

namespace {
std::shared_ptr<common_chat_templates> InitTemplates(const llama_model* model, const std::string& override) {
  try {
    LogCapture quiet;
    return std::shared_ptr<common_chat_templates>(common_chat_templates_init(model, override).release(),
                                                  common_chat_templates_free);
  } catch (const std::exception&) {
    return nullptr;
  }
}

std::string BuiltinTemplate(const std::string& tmpl, const std::vector<std::pair<std::string, std::string>>& messages,
                            bool addAssistant) {
  std::vector<llama_chat_message> msgs;
  size_t totalChars = 0;
  for (const auto& [role, content] : messages) {
    msgs.push_back({role.c_str(), content.c_str()});
    totalChars += role.size() + content.size();
  }
  std::string out(totalChars * 2 + 256, '\0');
  int32_t n = llama_chat_apply_template(tmpl.c_str(), msgs.data(), msgs.size(), addAssistant, out.data(),
                                        static_cast<int32_t>(out.size()));
  if (n > static_cast<int32_t>(out.size())) {
    out.resize(static_cast<size_t>(n));
    n = llama_chat_apply_template(tmpl.c_str(), msgs.data(), msgs.size(), addAssistant, out.data(),
                                  static_cast<int32_t>(out.size()));
  }
  if (n < 0) throw CodedError(codes::kInvalidRequest, "the chat template can be rendered neither by Jinja nor by llama.cpp's built-in matcher");
  out.resize(static_cast<size_t>(n));
  return out;
}
}  // namespace

std::string ModelHandle::ApplyChatTemplate(const std::vector<std::pair<std::string, std::string>>& messages,
                                           bool addAssistant, const std::string& templateOverride) {
  std::shared_ptr<common_chat_templates> templates;
  if (!templateOverride.empty()) {
    templates = InitTemplates(model_, templateOverride);
  } else {
    std::lock_guard<std::mutex> lock(templatesMutex_);
    if (!templatesTried_) {
      templates_ = InitTemplates(model_, "");
      templatesTried_ = true;
    }
    templates = templates_;
  }
  if (templates) {
    common_chat_templates_inputs inputs;
    for (const auto& [role, content] : messages) {
      common_chat_msg msg;
      msg.role = role;
      msg.content = content;
      inputs.messages.push_back(std::move(msg));
    }
    inputs.add_generation_prompt = addAssistant;
    inputs.use_jinja = true;
    try {
      LogCapture quiet;
      return common_chat_templates_apply(templates.get(), inputs).prompt;
    } catch (const std::exception&) {
      // fall through to the built-in matcher
    }
  }
  std::string tmpl = templateOverride;
  if (tmpl.empty()) {
    const char* t = llama_model_chat_template(model_, nullptr);
    if (t == nullptr) throw CodedError(codes::kInvalidRequest, "the model has no chat template");
    tmpl = t;
  }
  return BuiltinTemplate(tmpl, messages, addAssistant);
}

namespace {

// A vocab-only load is its own entry: it must never stand in for a model with weights.
// The last field is the placement (tensor split and host-kept tensors), written out.
using RegistryKey = std::tuple<std::string, int, bool, bool, std::string>;
std::mutex gRegistryMutex;
std::map<RegistryKey, std::weak_ptr<ModelHandle>> gRegistry;

std::string PlacementKey(const LoadOptions& options) {
  std::string key;
  for (float f : options.tensorSplit) key += std::to_string(f) + ",";
  key += "|";
  for (const std::string& pattern : options.cpuTensors) key += pattern + "\n";
  return key;
}

}  // namespace

uint64_t CheckModelFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) throw CodedError(codes::kModelFileNotFound, "model file not found or not readable: " + path);
  uint64_t size = static_cast<uint64_t>(file.tellg());
  char magic[4] = {0, 0, 0, 0};
  file.seekg(0);
  file.read(magic, 4);
  if (size < 8 || std::memcmp(magic, "GGUF", 4) != 0) {
    throw CodedError(codes::kInvalidModelFile, "not a GGUF file (bad magic): " + path);
  }
  return size;
}

namespace {

// llama.cpp reports why a load failed only through its log; classify from that text.
CodedError LoadFailure(const std::string& path, const LogCapture& capture, bool aborted) {
  if (aborted) return CodedError(codes::kLoadAborted, "model load aborted: " + path);
  const std::string& log = capture.text();
  std::string reason = capture.Tail(3);
  if (reason.empty()) reason = "llama_model_load_from_file returned NULL";
  if (log.find("unknown model architecture") != std::string::npos) {
    return CodedError(codes::kUnsupportedArchitecture, "unsupported model architecture in " + path + ": " + reason);
  }
  return CodedError(codes::kInvalidModelFile, "failed to load " + path + ": " + reason);
}

}  // namespace

ModelParams::ModelParams(const LoadOptions& options) : params(llama_model_default_params()) {
  if (options.gpuLayers >= 0) params.n_gpu_layers = options.gpuLayers;
  params.load_mode = options.useMmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
  params.vocab_only = options.vocabOnly;
  if (!options.tensorSplit.empty()) {
    split.assign(std::max<size_t>(llama_max_devices(), options.tensorSplit.size()), 0.0f);
    std::copy(options.tensorSplit.begin(), options.tensorSplit.end(), split.begin());
    params.tensor_split = split.data();
  }
  if (!options.cpuTensors.empty()) {
    for (const std::string& pattern : options.cpuTensors) {
      overrides.push_back({pattern.c_str(), ggml_backend_cpu_buffer_type()});
    }
    overrides.push_back({nullptr, nullptr});
    params.tensor_buft_overrides = overrides.data();
  }
}

std::shared_ptr<ModelHandle> AcquireModel(const std::string& path, const LoadOptions& options,
                                          bool (*progress)(float, void*), void* progressData) {
  uint64_t fileSize = CheckModelFile(path);
  RegistryKey key{path, options.gpuLayers, options.useMmap, options.vocabOnly, PlacementKey(options)};
  {
    std::lock_guard<std::mutex> lock(gRegistryMutex);
    auto it = gRegistry.find(key);
    if (it != gRegistry.end()) {
      if (auto live = it->second.lock()) return live;
    }
  }
  ModelParams built(options);
  llama_model_params& params = built.params;
  params.progress_callback = progress;
  params.progress_callback_user_data = progressData;
  bool aborted = false;
  llama_model* model = nullptr;
  LogCapture capture;
  try {
    model = llama_model_load_from_file(path.c_str(), params);
  } catch (const std::exception& e) {
    throw CodedError(codes::kInvalidModelFile, "failed to load " + path + ": " + e.what());
  }
  if (model == nullptr) {
    if (progress != nullptr) aborted = !progress(-1.0f, progressData);
    throw LoadFailure(path, capture, aborted);
  }
  auto handle = std::make_shared<ModelHandle>(model, path, fileSize, options.vocabOnly);
  std::lock_guard<std::mutex> lock(gRegistryMutex);
  auto& slot = gRegistry[key];
  if (auto live = slot.lock()) return live;  // another thread won the race; ours is freed
  slot = handle;
  return handle;
}

std::vector<llama_token> TokenizeText(const llama_vocab* vocab, const std::string& text, bool addSpecial,
                                      bool parseSpecial) {
  std::vector<llama_token> tokens(text.size() + 8);
  int32_t n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), addSpecial, parseSpecial);
  if (n < 0) {
    tokens.resize(static_cast<size_t>(-n));
    n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), addSpecial, parseSpecial);
  }
  if (n < 0) throw CodedError(codes::kInternal, "llama_tokenize failed");
  tokens.resize(static_cast<size_t>(n));
  return tokens;
}

namespace {

// The tokens llama.cpp's parse_special matches that plain tokenization does not: control and
// unknown tokens (user-defined tokens are matched either way).
bool IsControl(const llama_vocab* vocab, llama_token id) {
  return (llama_vocab_get_attr(vocab, id) & (LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_UNKNOWN)) != 0;
}

}  // namespace

bool HasControlText(const llama_vocab* vocab, const std::string& text) {
  if (text.empty()) return false;
  for (llama_token id : TokenizeText(vocab, text, false, true)) {
    if (IsControl(vocab, id)) return true;
  }
  return false;
}

std::vector<llama_token> TokenizeTemplated(const llama_vocab* vocab, const std::vector<std::string>& parts) {
  std::vector<llama_token> out;
  if (llama_vocab_get_add_bos(vocab)) out.push_back(llama_vocab_bos(vocab));
  std::string run;  // text since the last control token, markup and content together
  auto flush = [&]() {
    if (run.empty()) return;
    std::vector<llama_token> t = TokenizeText(vocab, run, false, false);
    out.insert(out.end(), t.begin(), t.end());
    run.clear();
  };
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    if (i % 2 == 1) {
      run += part;
      continue;
    }
    size_t pos = 0;
    for (llama_token id : TokenizeText(vocab, part, false, true)) {
      if (!IsControl(vocab, id)) continue;
      const char* text = llama_vocab_get_text(vocab, id);
      size_t at = text != nullptr && *text != '\0' ? part.find(text, pos) : std::string::npos;
      if (at == std::string::npos) continue;  // not where its text is (cannot happen for parsed text)
      run.append(part, pos, at - pos);
      flush();
      out.push_back(id);
      pos = at + std::strlen(text);
    }
    run.append(part, pos, std::string::npos);
  }
  flush();
  if (llama_vocab_get_add_eos(vocab)) out.push_back(llama_vocab_eos(vocab));
  return out;
}

std::string TokenPiece(const llama_vocab* vocab, llama_token token, bool special) {
  char buf[256];
  int32_t n = llama_token_to_piece(vocab, token, buf, sizeof(buf), 0, special);
  if (n >= 0) return std::string(buf, static_cast<size_t>(n));
  std::string big(static_cast<size_t>(-n), '\0');
  n = llama_token_to_piece(vocab, token, big.data(), static_cast<int32_t>(big.size()), 0, special);
  big.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return big;
}

// ---------------------------------------------------------------------------------------------
// AddonModel

void AddonModel::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "Model",
                                    {
                                        CodedMethod<&AddonModel::Info>("info"),
                                        CodedMethod<&AddonModel::Tokenize>("tokenize"),
                                        CodedMethod<&AddonModel::TokenizePrompt>("tokenizePrompt"),
                                        CodedMethod<&AddonModel::HasControlText>("hasControlText"),
                                        CodedMethod<&AddonModel::Detokenize>("detokenize"),
                                        CodedMethod<&AddonModel::ApplyChatTemplate>("applyChatTemplate"),
                                        CodedMethod<&AddonModel::CreateEngine>("createEngine"),
                                        CodedMethod<&AddonModel::Dispose>("dispose"),
                                        CodedGetter<&AddonModel::IsDisposed>("disposed"),
                                    });
  EnvRegistry::For(env).modelConstructor = Napi::Persistent(ctor);
  exports.Set("Model", ctor);
}

Napi::Object AddonModel::NewInstance(Napi::Env env, std::shared_ptr<ModelHandle> handle) {
  auto holder = std::make_unique<std::shared_ptr<ModelHandle>>(std::move(handle));
  auto external = Napi::External<std::shared_ptr<ModelHandle>>::New(
      env, holder.get(), [](Napi::Env, std::shared_ptr<ModelHandle>* p) { delete p; });
  holder.release();  // the External's finalizer owns it now
  return EnvRegistry::For(env).modelConstructor.New({external});
}

AddonModel::AddonModel(const Napi::CallbackInfo& info) : CodedObjectWrap<AddonModel>(info), env_(info.Env()) {
  if (info.Length() < 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "Model cannot be constructed directly; use loadModel()");
  }
  // Take the reference out of the External: dispose() must be able to free the model without
  // waiting for the External to be garbage-collected.
  handle_ = std::move(*info[0].As<Napi::External<std::shared_ptr<ModelHandle>>>().Data());
  teardown_.Install(env_, [this]() { Release(); });
  // llama_model_size is the tensors' total from the file's metadata, also for a vocab-only load
  // that never allocated them.
  reportedMemory_ = handle_->vocabOnly() ? 0 : static_cast<int64_t>(llama_model_size(handle_->model()));
  if (reportedMemory_ != 0) Napi::MemoryManagement::AdjustExternalMemory(env_, reportedMemory_);
}

AddonModel::~AddonModel() { Release(); }

// Runs once in effect, whichever comes first: dispose(), the env's teardown, or the GC.
void AddonModel::Release() {
  teardown_.Remove();
  handle_.reset();
  if (reportedMemory_ != 0) {
    int64_t bytes = reportedMemory_;
    reportedMemory_ = 0;
    try {
      Napi::MemoryManagement::AdjustExternalMemory(env_, -bytes);
    } catch (...) {
      // Only fails for an env that is gone, and its counter with it.
    }
  }
}

std::shared_ptr<ModelHandle> AddonModel::Handle(Napi::Env env) const {
  if (!handle_) ThrowCoded(env, codes::kDisposed, "the model has been disposed");
  return handle_;
}

Napi::Value AddonModel::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto handle = Handle(env);
  const llama_model* model = handle->model();
  const llama_vocab* vocab = handle->vocab();
  Napi::Object out = Napi::Object::New(env);

  char buf[512];
  auto meta = [&](const char* key) -> std::string {
    int32_t n = llama_model_meta_val_str(model, key, buf, sizeof(buf));
    return n >= 0 ? std::string(buf) : std::string();
  };
  out.Set("architecture", meta("general.architecture"));
  out.Set("name", meta("general.name"));
  llama_model_desc(model, buf, sizeof(buf));
  out.Set("description", std::string(buf));
  out.Set("parameterCount", Napi::Number::New(env, static_cast<double>(llama_model_n_params(model))));
  out.Set("sizeBytes", Napi::Number::New(env, static_cast<double>(llama_model_size(model))));
  out.Set("fileSize", Napi::Number::New(env, static_cast<double>(handle->fileSize())));
  out.Set("trainedContextLength", llama_model_n_ctx_train(model));
  out.Set("embeddingLength", llama_model_n_embd(model));
  out.Set("layerCount", llama_model_n_layer(model));
  out.Set("vocabSize", llama_vocab_n_tokens(vocab));
  const char* tmpl = llama_model_chat_template(model, nullptr);
  out.Set("chatTemplate", tmpl != nullptr ? Napi::Value(Napi::String::New(env, tmpl)) : env.Null());
  const char* vocabTypes[] = {"none", "spm", "bpe", "wpm", "ugm", "rwkv", "plamo2"};
  int vt = static_cast<int>(llama_vocab_type(vocab));
  out.Set("vocabType", vt >= 0 && vt < 7 ? vocabTypes[vt] : "unknown");

  Napi::Object special = Napi::Object::New(env);
  auto setToken = [&](const char* name, llama_token id) {
    if (id < 0) {
      special.Set(name, env.Null());
      return;
    }
    Napi::Object t = Napi::Object::New(env);
    t.Set("id", id);
    const char* text = llama_vocab_get_text(vocab, id);
    t.Set("text", text != nullptr ? text : "");
    special.Set(name, t);
  };
  setToken("bos", llama_vocab_bos(vocab));
  setToken("eos", llama_vocab_eos(vocab));
  setToken("eot", llama_vocab_eot(vocab));
  setToken("sep", llama_vocab_sep(vocab));
  setToken("nl", llama_vocab_nl(vocab));
  setToken("pad", llama_vocab_pad(vocab));
  out.Set("specialTokens", special);
  out.Set("addBos", llama_vocab_get_add_bos(vocab));
  out.Set("addEos", llama_vocab_get_add_eos(vocab));

  Napi::Array eog = Napi::Array::New(env);
  uint32_t nEog = 0;
  int32_t nVocab = llama_vocab_n_tokens(vocab);
  for (llama_token id = 0; id < nVocab; ++id) {
    if (llama_vocab_is_eog(vocab, id)) eog.Set(nEog++, id);
  }
  out.Set("eogTokens", eog);
  return out;
}

Napi::Value AddonModel::Tokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto handle = Handle(env);
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "text must be a string");
  bool addSpecial = info.Length() > 1 && info[1].IsBoolean() ? info[1].As<Napi::Boolean>().Value() : true;
  bool parseSpecial = info.Length() > 2 && info[2].IsBoolean() ? info[2].As<Napi::Boolean>().Value() : false;
  std::vector<llama_token> tokens =
      TokenizeText(handle->vocab(), info[0].As<Napi::String>().Utf8Value(), addSpecial, parseSpecial);
  Napi::Int32Array out = Napi::Int32Array::New(env, tokens.size());
  std::memcpy(out.Data(), tokens.data(), tokens.size() * sizeof(llama_token));
  return out;
}

Napi::Value AddonModel::HasControlText(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto handle = Handle(env);
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "text must be a string");
  return Napi::Boolean::New(env, lmserve::HasControlText(handle->vocab(), info[0].As<Napi::String>().Utf8Value()));
}

std::vector<std::string> PromptParts(Napi::Env env, Napi::Value value) {
  if (!value.IsArray()) ThrowCoded(env, codes::kInvalidRequest, "prompt parts must be an array of strings", "prompt");
  Napi::Array a = value.As<Napi::Array>();
  std::vector<std::string> parts;
  parts.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value v = a.Get(i);
    if (!v.IsString()) ThrowCoded(env, codes::kInvalidRequest, "prompt parts must be strings", "prompt");
    parts.push_back(v.As<Napi::String>().Utf8Value());
  }
  return parts;
}

Napi::Value AddonModel::TokenizePrompt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto handle = Handle(env);
  std::vector<llama_token> tokens = TokenizeTemplated(handle->vocab(), PromptParts(env, info.Length() > 0 ? info[0] : env.Undefined()));
  Napi::Int32Array out = Napi::Int32Array::New(env, tokens.size());
  std::memcpy(out.Data(), tokens.data(), tokens.size() * sizeof(llama_token));
  return out;
}

Napi::Value AddonModel::Detokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto handle = Handle(env);
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "tokens must be an Int32Array");
  Napi::Int32Array arr = info[0].As<Napi::Int32Array>();
  bool special = info.Length() > 1 && info[1].IsBoolean() ? info[1].As<Napi::Boolean>().Value() : false;
  int32_t nVocab = llama_vocab_n_tokens(handle->vocab());
  for (size_t i = 0; i < arr.ElementLength(); ++i) {
    if (arr[i] < 0 || arr[i] >= nVocab) {
      ThrowCoded(env, codes::kInvalidRequest,
                 "tokens[" + std::to_string(i) + "] = " + std::to_string(arr[i]) + " is outside the vocabulary (0.." +
                     std::to_string(nVocab - 1) + ")");
    }
  }
  // Without special tokens, control tokens (BOS, EOS, ...) are dropped before detokenizing, so
  // tokenize("Hi") with its BOS reads back as "Hi" (llama.cpp alone would give " Hi").
  std::vector<llama_token> tokens(arr.Data(), arr.Data() + arr.ElementLength());
  if (!special) {
    tokens.erase(std::remove_if(tokens.begin(), tokens.end(),
                                [&](llama_token t) {
                                  return (llama_vocab_get_attr(handle->vocab(), t) & LLAMA_TOKEN_ATTR_CONTROL) != 0;
                                }),
                 tokens.end());
  }
  std::string text(tokens.size() * 8 + 16, '\0');
  int32_t n = llama_detokenize(handle->vocab(), tokens.data(), static_cast<int32_t>(tokens.size()), text.data(),
                               static_cast<int32_t>(text.size()), false, special);
  if (n < 0) {
    text.resize(static_cast<size_t>(-n));
    n = llama_detokenize(handle->vocab(), tokens.data(), static_cast<int32_t>(tokens.size()), text.data(),
                         static_cast<int32_t>(text.size()), false, special);
  }
  text.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return Napi::String::New(env, text);
}

// applyChatTemplate(messages: {role, content}[], addAssistant: boolean, template?: string)
Napi::Value AddonModel::ApplyChatTemplate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto handle = Handle(env);
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "messages must be an array");
  Napi::Array arr = info[0].As<Napi::Array>();
  bool addAssistant = info.Length() > 1 && info[1].IsBoolean() ? info[1].As<Napi::Boolean>().Value() : true;
  std::string tmpl = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
  std::vector<std::pair<std::string, std::string>> messages;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value v = arr.Get(i);
    std::string field = "messages[" + std::to_string(i) + "]";
    if (!v.IsObject()) ThrowCoded(env, codes::kInvalidRequest, field + " must be an object");
    Napi::Object m = v.As<Napi::Object>();
    if (!m.Get("role").IsString() || !m.Get("content").IsString()) {
      ThrowCoded(env, codes::kInvalidRequest, field + " needs string role and content");
    }
    messages.emplace_back(m.Get("role").As<Napi::String>().Utf8Value(), m.Get("content").As<Napi::String>().Utf8Value());
  }
  return Napi::String::New(env, handle->ApplyChatTemplate(messages, addAssistant, tmpl));
}

Napi::Value AddonModel::CreateEngine(const Napi::CallbackInfo& info) {
  return AddonEngine::Create(info, Handle(info.Env()));
}

Napi::Value AddonModel::Dispose(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

Napi::Value AddonModel::IsDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !handle_);
}

// ---------------------------------------------------------------------------------------------
// Loading: an AsyncWorker off the JS thread, progress through a thread-safe function.

namespace {

void CallProgress(Napi::Env env, Napi::Function callback, std::nullptr_t*, float* value) {
  std::unique_ptr<float> owned(value);
  if (env == nullptr || callback == nullptr) return;
  try {
    CallJsSafely(callback, {Napi::Number::New(env, *value)});
  } catch (...) {
  }
}

using ProgressTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, float, CallProgress>;

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, AddonModelLoader* loader, Napi::Object loaderObject, std::string path,
             LoadOptions options, Napi::Function onProgress)
      : Napi::AsyncWorker(env, "lmserve.loadModel"),
        deferred_(Napi::Promise::Deferred::New(env)),
        loader_(loader),
        path_(std::move(path)),
        options_(options) {
    loaderRef_ = Napi::Persistent(loaderObject);
    if (!onProgress.IsEmpty()) {
      progress_ = ProgressTsfn::New(env, onProgress, "lmserve.loadProgress", 0, 1);
      hasProgress_ = true;
    }
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      handle_ = AcquireModel(path_, options_, &LoadWorker::OnProgress, this);
    } catch (const CodedError& e) {
      code_ = e.code();
      SetError(e.what());
    } catch (const std::exception& e) {
      code_ = codes::kInternal;
      SetError(std::string("model load failed: ") + e.what());
    }
  }

  // Both completions run on the JS thread, which may be a worker being terminated: then every
  // N-API call throws, and an exception escaping here would abort the process.
  void OnOK() override {
    try {
      ReleaseProgress();
      deferred_.Resolve(AddonModel::NewInstance(Env(), std::move(handle_)));
    } catch (...) {
    }
  }

  void OnError(const Napi::Error& error) override {
    try {
      ReleaseProgress();
      deferred_.Reject(MakeCodedError(Env(), code_, error.Message()).Value());
    } catch (...) {
    }
  }

 private:
  // Called on the worker thread. A negative value is our own "did the user abort?" query.
  static bool OnProgress(float value, void* data) {
    auto* self = static_cast<LoadWorker*>(data);
    if (self->loader_->aborted()) return false;
    if (value < 0) return true;
    if (self->hasProgress_ && (value - self->lastReported_ >= 0.01f || value >= 1.0f)) {
      self->lastReported_ = value;
      self->progress_.NonBlockingCall(new float(value));
    }
    return true;
  }

  void ReleaseProgress() {
    if (hasProgress_) {
      progress_.Release();
      hasProgress_ = false;
    }
  }

  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference loaderRef_;
  AddonModelLoader* loader_;
  std::string path_;
  LoadOptions options_;
  ProgressTsfn progress_;
  bool hasProgress_ = false;
  float lastReported_ = -1.0f;
  std::shared_ptr<ModelHandle> handle_;
  std::string code_ = codes::kInternal;
};

}  // namespace

void AddonModelLoader::Init(Napi::Env env, Napi::Object exports) {
  exports.Set("ModelLoader", DefineClass(env, "ModelLoader",
                                         {
                                             CodedMethod<&AddonModelLoader::Load>("load"),
                                             CodedMethod<&AddonModelLoader::Abort>("abort"),
                                         }));
}

AddonModelLoader::AddonModelLoader(const Napi::CallbackInfo& info) : CodedObjectWrap<AddonModelLoader>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  path_ = info[0].As<Napi::String>().Utf8Value();
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    options_ = ParseLoadPlacement(env, o);
    if (o.Get("vocabOnly").IsBoolean()) options_.vocabOnly = o.Get("vocabOnly").As<Napi::Boolean>().Value();
  }
  if (info.Length() > 2 && info[2].IsFunction()) onProgress_ = Napi::Persistent(info[2].As<Napi::Function>());
}

Napi::Value AddonModelLoader::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (started_) throw Napi::Error::New(env, "ModelLoader.load() may be called once");
  started_ = true;
  Napi::Function progress = onProgress_.IsEmpty() ? Napi::Function() : onProgress_.Value();
  auto* worker = new LoadWorker(env, this, info.This().As<Napi::Object>(), path_, options_, progress);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value AddonModelLoader::Abort(const Napi::CallbackInfo& info) {
  aborted_.store(true);
  return info.Env().Undefined();
}

}  // namespace lmserve
