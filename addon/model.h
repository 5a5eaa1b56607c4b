// A loaded llama_model, shared by every engine (and every worker thread) of the process.
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "env_registry.h"
#include "errors.h"
#include "llama.h"
#include "sampling.h"

struct common_chat_templates;  // llama.cpp common/chat.h

namespace lmserve {

// Owns one llama_model. Shared (reference-counted) across the threads of a process: loading
// the same file with the same options twice returns the same handle.
class ModelHandle {
 public:
  ModelHandle(llama_model* model, std::string path, uint64_t fileSize, bool vocabOnly);
  ~ModelHandle();
  ModelHandle(const ModelHandle&) = delete;
  ModelHandle& operator=(const ModelHandle&) = delete;

  llama_model* model() const { return model_; }
  // Renders messages with the model's chat template through llama.cpp's Jinja engine (the same
  // code llama-server uses), falling back to llama.cpp's built-in template matcher. Thread-safe.
  // Throws CodedError(INVALID_REQUEST) when neither can render the template.
  std::string ApplyChatTemplate(const std::vector<std::pair<std::string, std::string>>& messages, bool addAssistant,
                                const std::string& templateOverride);
  const llama_vocab* vocab() const { return llama_model_get_vocab(model_); }
  const std::string& path() const { return path_; }
  uint64_t fileSize() const { return fileSize_; }
  // Loaded with llama_model_params.vocab_only: tokenizer and grammars only, no weights.
  bool vocabOnly() const { return vocabOnly_; }
  // Parsed grammars of this model (see GrammarCache), shared by all its engines and threads.
  GrammarCache& grammarCache() { return grammarCache_; }

 private:
  llama_model* model_;
  std::string path_;
  uint64_t fileSize_;
  bool vocabOnly_;
  std::mutex templatesMutex_;
  std::shared_ptr<::common_chat_templates> templates_;  // parsed on first use
  bool templatesTried_ = false;
  GrammarCache grammarCache_;
};

struct LoadOptions {
  int gpuLayers = -1;  // negative: llama.cpp's default, every layer on the GPU (CPU builds ignore it)
  bool useMmap = true;
  // Only the vocabulary (tokenize, detokenize, checkGrammar): for a process that parses
  // untrusted grammars without holding the weights. Such a model cannot create an engine.
  bool vocabOnly = false;
  // A placement found by the fit (fit.h): layers per GPU device (empty: llama.cpp's default
  // split) and tensor-name patterns kept in host memory (the part of a layer, or a MoE
  // layer's experts, that does not fit its device).
  std::vector<float> tensorSplit;
  std::vector<std::string> cpuTensors;
};

// llama_model_params for `options`, with the arrays they point to (keep it alive, and in place,
// while the params are used).
struct ModelParams {
  llama_model_params params;
  std::vector<float> split;
  std::vector<llama_model_tensor_buft_override> overrides;
  explicit ModelParams(const LoadOptions& options);
  ModelParams(const ModelParams&) = delete;
  ModelParams& operator=(const ModelParams&) = delete;
};

// Throws MODEL_FILE_NOT_FOUND / INVALID_MODEL_FILE unless `path` is a readable GGUF file; its size.
uint64_t CheckModelFile(const std::string& path);

// Loads (or finds) a model; throws CodedError. `progress` may return false to abort.
std::shared_ptr<ModelHandle> AcquireModel(const std::string& path, const LoadOptions& options,
                                          bool (*progress)(float, void*), void* progressData);

// JS class `Model`: info, tokenize, detokenize, chat template, engine creation, dispose.
class AddonModel : public CodedObjectWrap<AddonModel> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<ModelHandle> handle);
  explicit AddonModel(const Napi::CallbackInfo& info);
  ~AddonModel() override;

  // The handle, or a DISPOSED error thrown into JS.
  std::shared_ptr<ModelHandle> Handle(Napi::Env env) const;

 private:
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Tokenize(const Napi::CallbackInfo& info);
  // tokenizePrompt(parts: string[]) -> Int32Array (TokenizeTemplated)
  Napi::Value TokenizePrompt(const Napi::CallbackInfo& info);
  // hasControlText(text) -> boolean (HasControlText)
  Napi::Value HasControlText(const Napi::CallbackInfo& info);
  Napi::Value Detokenize(const Napi::CallbackInfo& info);
  Napi::Value ApplyChatTemplate(const Napi::CallbackInfo& info);
  Napi::Value CreateEngine(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value IsDisposed(const Napi::CallbackInfo& info);
  void Release();

  std::shared_ptr<ModelHandle> handle_;
  int64_t reportedMemory_ = 0;
  // Frees the weights when the thread's env goes away without dispose().
  EnvTeardownHook teardown_;
  Napi::Env env_;
};

// JS class `ModelLoader`: new ModelLoader(path, {gpuLayers, useMmap, vocabOnly}, onProgress?)
// then load() -> Promise<Model>; abort() stops a load in progress (LOAD_ABORTED).
class AddonModelLoader : public CodedObjectWrap<AddonModelLoader> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit AddonModelLoader(const Napi::CallbackInfo& info);

  bool aborted() const { return aborted_.load(); }

 private:
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Abort(const Napi::CallbackInfo& info);

  std::string path_;
  LoadOptions options_;
  Napi::FunctionReference onProgress_;
  std::atomic<bool> aborted_{false};
  bool started_ = false;
};

// Tokenization helpers shared with the engine.
// Whether `text` holds the text of a control token (llama.cpp would parse it as that token
// with parse_special): what a client's message content must never become.
bool HasControlText(const llama_vocab* vocab, const std::string& text);

// A templated prompt in parts: even indices are the template's markup (its control tokens are
// parsed), odd indices are message content (tokenized as plain text: a "</s>" a client wrote
// stays four characters). The markup's control tokens are located in order; the text between
// them, markup and content together, is tokenized as llama.cpp tokenizes the text between
// special tokens, so a prompt whose content holds no control text gets exactly the tokens of
// the joined string parsed with parse_special. BOS/EOS as add_special would add them.
std::vector<llama_token> TokenizeTemplated(const llama_vocab* vocab, const std::vector<std::string>& parts);

// JS array of strings -> parts for TokenizeTemplated; throws INVALID_REQUEST naming `prompt`.
std::vector<std::string> PromptParts(Napi::Env env, Napi::Value value);

std::vector<llama_token> TokenizeText(const llama_vocab* vocab, const std::string& text, bool addSpecial,
                                      bool parseSpecial);
std::string TokenPiece(const llama_vocab* vocab, llama_token token, bool special);

}  // namespace lmserve
