#include "engine.h"
#include "placement.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common.h"  // llama.cpp common: common_cpu_get_num_math
#include "env_registry.h"
#include "errors.h"

namespace lmserve {

namespace {
Napi::Object ToJs(Napi::Env env, const EngineEvent& ev);
}

void EngineEventState::SetActive(Napi::Env env, int32_t delta) {
  int32_t before = active;
  active = std::max(0, active + delta);
  if (released) return;
  if (before == 0 && active > 0) tsfn.Ref(env);
  if (before > 0 && active == 0) tsfn.Unref(env);
}

void CallEngineEvents(Napi::Env env, Napi::Function callback, EngineEventState* state,
                      std::vector<EngineEvent>* events) {
  std::unique_ptr<std::vector<EngineEvent>> owned(events);
  if (env == nullptr || callback == nullptr || state == nullptr) return;
  try {
    Napi::HandleScope scope(env);
    Napi::Array arr = Napi::Array::New(env, events->size());
    int32_t finished = 0;
    for (size_t i = 0; i < events->size(); ++i) {
      const EngineEvent& ev = (*events)[i];
      if (ev.type != EngineEvent::Type::Tokens) finished++;
      arr.Set(static_cast<uint32_t>(i), ToJs(env, ev));
    }
    if (finished > 0) state->SetActive(env, -finished);
    CallJsSafely(callback, {arr});
  } catch (...) {
    // The env is going away (a terminated worker thread): nobody is left to deliver to.
  }
}

namespace {

int32_t IntOption(Napi::Env env, Napi::Object o, const char* name, int32_t fallback, int32_t min, int32_t max) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  const std::string field = std::string("options.") + name;
  if (!v.IsNumber()) ThrowCoded(env, codes::kInvalidRequest, field + " must be a number", field);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < min || d > max) {
    ThrowCoded(env, codes::kInvalidRequest,
               field + " must be an integer in " + std::to_string(min) + ".." + std::to_string(max), field);
  }
  return static_cast<int32_t>(d);
}

bool BoolOption(Napi::Env env, Napi::Object o, const char* name, bool fallback) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  const std::string field = std::string("options.") + name;
  if (!v.IsBoolean()) ThrowCoded(env, codes::kInvalidRequest, field + " must be a boolean", field);
  return v.As<Napi::Boolean>().Value();
}

}  // namespace

EngineOptions ParseEngineOptions(Napi::Env env, Napi::Value value) {
  EngineOptions o;
  if (!value.IsObject()) return o;
  Napi::Object obj = value.As<Napi::Object>();
  o.slots = IntOption(env, obj, "slots", o.slots, 1, 256);
  o.contextSize = IntOption(env, obj, "contextSize", o.contextSize, 16, 1 << 22);
  o.batchSize = IntOption(env, obj, "batchSize", std::max(o.batchSize, o.slots), 1, 1 << 16);
  o.threads = IntOption(env, obj, "threads", o.threads, 0, 1024);
  // 0: as llama-server does, one thread per core useful for math (physical, performance cores),
  // not llama_context_default_params' fixed 4 (twice the cores of a 2-core machine, whose
  // OpenMP threads then wait on each other at every barrier).
  if (o.threads == 0) o.threads = std::max(1, static_cast<int>(common_cpu_get_num_math()));
  o.maxQueue = IntOption(env, obj, "maxQueue", o.maxQueue, 0, 1 << 20);
  o.flashAttention = IntOption(env, obj, "flashAttention", o.flashAttention, -1, 1);
  o.kvUnified = BoolOption(env, obj, "kvUnified", o.kvUnified);
  o.prefixSharing = BoolOption(env, obj, "prefixSharing", o.prefixSharing);
  o.swaFull = BoolOption(env, obj, "swaFull", o.swaFull);
  o.kvSize = IntOption(env, obj, "kvSize", 0, 0, 1 << 24);
  o.promptCacheMiB = IntOption(env, obj, "promptCacheMiB", o.promptCacheMiB, 0, 1 << 24);
  o.bestLogitsOnly = BoolOption(env, obj, "bestLogitsOnly", o.bestLogitsOnly);
  // Default: on where a GPU computes the step (short steps; the CPU's cores wait meanwhile). On
  // a CPU-only machine the same cores decode, and sampling on two of them measured no faster.
  o.parallelSampling = BoolOption(env, obj, "parallelSampling", HasGpu());
#if !defined(_OPENMP)
  o.parallelSampling = false;  // no OpenMP in this build: every sequence on the engine's thread
#endif
  if (o.kvSize > 0 && !o.kvUnified) {
    ThrowCoded(env, codes::kInvalidRequest, "options.kvSize needs options.kvUnified", "options.kvSize");
  }
  if (o.kvSize > 0 && o.kvSize < o.contextSize) {
    ThrowCoded(env, codes::kInvalidRequest, "options.kvSize must be at least options.contextSize", "options.kvSize");
  }
  if (o.batchSize < o.slots) {
    ThrowCoded(env, codes::kInvalidRequest, "options.batchSize must be at least options.slots", "options.batchSize");
  }
  return o;
}

namespace {

class CreateEngineWorker : public Napi::AsyncWorker {
 public:
  CreateEngineWorker(Napi::Env env, std::shared_ptr<ModelHandle> model, EngineOptions options, Napi::Function onEvents)
      : Napi::AsyncWorker(env, "lmserve.createEngine"),
        deferred_(Napi::Promise::Deferred::New(env)),
        model_(std::move(model)),
        options_(options),
        onEvents_(Napi::Persistent(onEvents)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      core_ = std::make_unique<EngineCore>(model_, options_);
    } catch (const CodedError& e) {
      code_ = e.code();
      SetError(e.what());
    } catch (const std::exception& e) {
      SetError(std::string("engine creation failed: ") + e.what());
    }
  }

  // Both completions run on the JS thread, which may be a worker being terminated: then every
  // N-API call throws, and an exception escaping here would abort the process.
  void OnOK() override {
    try {
      Napi::Env env = Env();
      // The External points at core_ itself: the constructor moves the core out of it, so the
      // core has one owner at every moment. If the constructor throws before that, core_ still
      // owns it and this worker's destructor frees it; if after, the half-built Engine does.
      auto external = Napi::External<std::unique_ptr<EngineCore>>::New(env, &core_);
      Napi::Object engine = EnvRegistry::For(env).engineConstructor.New({external, onEvents_.Value()});
      deferred_.Resolve(engine);
    } catch (const Napi::Error& e) {
      try {
        deferred_.Reject(e.Value());
      } catch (...) {
      }
    } catch (...) {
    }
  }

  void OnError(const Napi::Error& error) override {
    try {
      deferred_.Reject(MakeCodedError(Env(), code_, error.Message()).Value());
    } catch (...) {
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<ModelHandle> model_;
  EngineOptions options_;
  Napi::FunctionReference onEvents_;
  std::unique_ptr<EngineCore> core_;
  std::string code_ = codes::kInternal;
};

Napi::Object ToJs(Napi::Env env, const EngineEvent& ev) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", ev.id);
  switch (ev.type) {
    case EngineEvent::Type::Tokens: {
      o.Set("type", "tokens");
      o.Set("text", Napi::String::New(env, ev.text));
      Napi::Array ids = Napi::Array::New(env, ev.tokens.size());
      for (size_t i = 0; i < ev.tokens.size(); ++i) ids.Set(static_cast<uint32_t>(i), ev.tokens[i]);
      o.Set("tokens", ids);
      if (!ev.logprobs.empty()) {
        // [{id, text, bytes, logprob, top: [{id, text, bytes, logprob}]}]: bytes keep a piece
        // that is not whole UTF-8 on its own.
        size_t piece = 0;
        auto entry = [&](llama_token id, float logprob) {
          Napi::Object e = Napi::Object::New(env);
          const std::string& text = piece < ev.pieces.size() ? ev.pieces[piece] : std::string();
          piece++;
          e.Set("id", id);
          e.Set("text", Napi::String::New(env, text));
          Napi::Array bytes = Napi::Array::New(env, text.size());
          for (size_t b = 0; b < text.size(); ++b) bytes.Set(static_cast<uint32_t>(b), static_cast<uint8_t>(text[b]));
          e.Set("bytes", bytes);
          e.Set("logprob", std::isfinite(logprob) ? static_cast<double>(logprob) : -9999.0);
          return e;
        };
        Napi::Array lps = Napi::Array::New(env, ev.logprobs.size());
        for (size_t i = 0; i < ev.logprobs.size(); ++i) {
          const TokenLogprob& lp = ev.logprobs[i];
          Napi::Object e = entry(lp.token, lp.logprob);
          Napi::Array top = Napi::Array::New(env, lp.top.size());
          for (size_t k = 0; k < lp.top.size(); ++k) top.Set(static_cast<uint32_t>(k), entry(lp.top[k].first, lp.top[k].second));
          e.Set("top", top);
          lps.Set(static_cast<uint32_t>(i), e);
        }
        o.Set("logprobs", lps);
      }
      break;
    }
    case EngineEvent::Type::Done: {
      o.Set("type", "done");
      o.Set("finishReason", ev.finishReason);
      if (!ev.stopString.empty()) o.Set("stopString", ev.stopString);
      Napi::Object usage = Napi::Object::New(env);
      usage.Set("tokensIn", ev.tokensIn);
      usage.Set("tokensOut", ev.tokensOut);
      usage.Set("cachedTokens", ev.cachedTokens);
      o.Set("usage", usage);
      Napi::Object t = Napi::Object::New(env);
      t.Set("queueMs", ev.queueMs);
      t.Set("ttftMs", ev.ttftMs);
      t.Set("prefillMs", ev.prefillMs);
      t.Set("decodeMs", ev.decodeMs);
      t.Set("totalMs", ev.totalMs);
      o.Set("timings", t);
      if (!ev.text.empty()) o.Set("text", Napi::String::New(env, ev.text));
      if (!ev.tail.empty()) o.Set("tail", Napi::String::New(env, ev.tail));
      break;
    }
    case EngineEvent::Type::Error:
      o.Set("type", "error");
      o.Set("code", ev.code);
      o.Set("message", ev.message);
      if (!ev.tail.empty()) o.Set("tail", Napi::String::New(env, ev.tail));
      break;
  }
  return o;
}

// submit()'s {delivery: 'events' | 'final' | 'direct', direct: {fd, prefix, afterText,
// afterTokens?, skipEmpty?, coalesceMs?}, eventIntervalMs?}: how the request's output leaves
// the engine.
void ParseDelivery(Napi::Env env, const Napi::Object& options, Request& request) {
  Napi::Value interval = options.Get("eventIntervalMs");
  if (!interval.IsUndefined()) {
    if (!interval.IsNumber() || !(interval.As<Napi::Number>().DoubleValue() >= 0) ||
        interval.As<Napi::Number>().DoubleValue() > 60000) {
      ThrowCoded(env, codes::kInvalidRequest, "eventIntervalMs must be a number of milliseconds from 0 to 60000",
                 "eventIntervalMs");
    }
    request.eventIntervalMs = interval.As<Napi::Number>().Int32Value();
  }
  Napi::Value delivery = options.Get("delivery");
  if (delivery.IsUndefined()) return;
  std::string mode = delivery.IsString() ? delivery.As<Napi::String>().Utf8Value() : std::string();
  if (mode == "events") return;
  if (mode == "final") {
    request.delivery = Delivery::Final;
    return;
  }
  if (mode != "direct") ThrowCoded(env, codes::kInvalidRequest, "delivery must be 'events', 'final' or 'direct'", "delivery");
  Napi::Value spec = options.Get("direct");
  if (!spec.IsObject()) ThrowCoded(env, codes::kInvalidRequest, "delivery 'direct' needs a direct object", "direct");
  Napi::Object o = spec.As<Napi::Object>();
  auto text = [&](const char* key, bool required) -> std::string {
    Napi::Value v = o.Get(key);
    if (v.IsString()) return v.As<Napi::String>().Utf8Value();
    if (required || !v.IsUndefined()) ThrowCoded(env, codes::kInvalidRequest, std::string("direct.") + key + " must be a string", std::string("direct.") + key);
    return std::string();
  };
  auto out = std::make_unique<DirectOutput>();
  Napi::Value fd = o.Get("fd");
  if (!fd.IsNumber() || fd.As<Napi::Number>().Int32Value() < 0) ThrowCoded(env, codes::kInvalidRequest, "direct.fd must be a file descriptor", "direct.fd");
  out->fd = fd.As<Napi::Number>().Int32Value();
  out->prefix = text("prefix", true);
  out->afterText = text("afterText", true);
  Napi::Value afterTokens = o.Get("afterTokens");
  out->withTokens = afterTokens.IsString();
  out->afterTokens = text("afterTokens", false);
  Napi::Value skip = o.Get("skipEmpty");
  if (skip.IsBoolean()) out->skipEmpty = skip.As<Napi::Boolean>().Value();
  Napi::Value coalesce = o.Get("coalesceMs");
  if (coalesce.IsNumber()) out->coalesceMs = std::max(0, coalesce.As<Napi::Number>().Int32Value());
  request.delivery = Delivery::Direct;
  request.direct = std::move(out);
}

}  // namespace

void AddonEngine::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "Engine",
                                    {
                                        CodedMethod<&AddonEngine::Submit>("submit"),
                                        CodedMethod<&AddonEngine::Cancel>("cancel"),
                                        CodedMethod<&AddonEngine::Stats>("stats"),
                                        CodedMethod<&AddonEngine::Dispose>("dispose"),
                                        CodedMethod<&AddonEngine::Options>("options"),
                                        CodedMethod<&AddonEngine::Memory>("memory"),
                                    });
  EnvRegistry::For(env).engineConstructor = Napi::Persistent(ctor);
  exports.Set("Engine", ctor);
}

Napi::Value AddonEngine::Create(const Napi::CallbackInfo& info, std::shared_ptr<ModelHandle> model) {
  Napi::Env env = info.Env();
  if (model->vocabOnly()) {
    ThrowCoded(env, codes::kInvalidRequest, "the model was loaded with vocabOnly: it has no weights to run an engine");
  }
  EngineOptions options = ParseEngineOptions(env, info.Length() > 0 ? info[0] : env.Undefined());
  if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env, "onEvents must be a function");
  auto* worker = new CreateEngineWorker(env, std::move(model), options, info[1].As<Napi::Function>());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

AddonEngine::AddonEngine(const Napi::CallbackInfo& info) : CodedObjectWrap<AddonEngine>(info), env_(info.Env()) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsFunction()) {
    throw Napi::TypeError::New(env, "Engine cannot be constructed directly; use model.createEngine()");
  }
  auto* owner = info[0].As<Napi::External<std::unique_ptr<EngineCore>>>().Data();
  if (owner == nullptr || !*owner) throw Napi::TypeError::New(env, "Engine: no engine core to take over");
  core_ = std::move(*owner);
  // From here on a throw means no destructor call (the object was never constructed): Shutdown
  // undoes what was set up, stopping and freeing the core once (the worker's pointer is empty).
  try {
    auto state = std::make_unique<EngineEventState>();
    state->tsfn = EngineEventTsfn::New(env, info[1].As<Napi::Function>(), "lmserve.engineEvents", 0, 1, state.get(),
                                       [](Napi::Env, void*, EngineEventState* s) { delete s; });
    events_ = state.release();  // the TSFN's finalizer owns it now
    events_->tsfn.Unref(env);   // only pending requests keep the process alive
    // The loop thread only sees the TSFN (a copyable handle), never this object.
    EngineEventTsfn tsfn = events_->tsfn;
    core_->Start([tsfn](std::vector<EngineEvent>&& events) mutable {
      auto* batch = new std::vector<EngineEvent>(std::move(events));
      if (tsfn.NonBlockingCall(batch) != napi_ok) delete batch;
    });
    teardown_.Install(env, [this]() { Shutdown(); });
    // The context's KV cache and buffers are native memory V8 cannot see; telling it lets the
    // GC weigh an unreferenced engine by what it really holds. Taken back in Shutdown.
    reportedMemory_ = core_->memoryBytes();
    Napi::MemoryManagement::AdjustExternalMemory(env, reportedMemory_);
  } catch (...) {
    Shutdown();
    throw;
  }
}

AddonEngine::~AddonEngine() { Shutdown(); }

// Runs once in effect, whichever comes first: dispose(), the env's teardown, or the GC.
void AddonEngine::Shutdown() {
  teardown_.Remove();
  if (core_) {
    core_->Stop();
    core_.reset();
  }
  if (events_ != nullptr) {
    // Batches already queued (the DISPOSED errors above included) are still delivered.
    events_->released = true;
    events_->tsfn.Release();
    events_ = nullptr;
  }
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

EngineCore& AddonEngine::Core(Napi::Env env) {
  if (!core_) ThrowCoded(env, codes::kDisposed, "the engine has been disposed");
  return *core_;
}

// submit(id, prompt: string | string[] (TokenizeTemplated parts) | Int32Array, params, {parseSpecial}) -> {tokensIn}
Napi::Value AddonEngine::Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EngineCore& core = Core(env);
  if (info.Length() < 2 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "submit(id, prompt, params)");
  const llama_vocab* vocab = core.model()->vocab();
  const int32_t nVocab = llama_vocab_n_tokens(vocab);
  auto request = std::make_unique<Request>();
  request->id = info[0].As<Napi::Number>().Uint32Value();
  bool parseSpecial = true;
  if (info.Length() > 3 && info[3].IsObject()) {
    Napi::Object options = info[3].As<Napi::Object>();
    Napi::Value ps = options.Get("parseSpecial");
    if (ps.IsBoolean()) parseSpecial = ps.As<Napi::Boolean>().Value();
    ParseDelivery(env, options, *request);
  }
  if (info[1].IsString()) {
    request->prompt = TokenizeText(vocab, info[1].As<Napi::String>().Utf8Value(), true, parseSpecial);
  } else if (info[1].IsArray()) {
    request->prompt = TokenizeTemplated(vocab, PromptParts(env, info[1]));
  } else if (info[1].IsTypedArray() && info[1].As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
    Napi::Int32Array arr = info[1].As<Napi::Int32Array>();
    request->prompt.assign(arr.Data(), arr.Data() + arr.ElementLength());
    for (size_t i = 0; i < request->prompt.size(); ++i) {
      if (request->prompt[i] < 0 || request->prompt[i] >= nVocab) {
        ThrowCoded(env, codes::kInvalidRequest, "prompt token " + std::to_string(i) + " is outside the vocabulary",
                   "prompt");
      }
    }
  } else {
    ThrowCoded(env, codes::kInvalidRequest,
               "prompt must be a string, an array of template and content parts, or an Int32Array of token ids", "prompt");
  }
  request->params = ParseGenerationParams(env, info.Length() > 2 ? info[2] : env.Undefined(), nVocab);
  // -1: the penalties look at the whole sequence, as llama-server's repeat_last_n -1 (llama.cpp's
  // sampler itself reads a negative window as 0, no penalty at all).
  if (request->params.repeatLastN < 0) request->params.repeatLastN = core.options().contextSize;
  int32_t tokensIn = static_cast<int32_t>(request->prompt.size());
  // TokenizeText, BuildSampler and EngineCore::Submit throw CodedError; the method runs
  // through RunCoded (CodedMethod), which hands them to JS with their code.
  request->sampler = BuildSampler(core.model()->model(), request->params, &core.model()->grammarCache(),
                                  core.options().bestLogitsOnly);
  core.Submit(std::move(request));
  events_->SetActive(env, +1);
  Napi::Object out = Napi::Object::New(env);
  out.Set("tokensIn", tokensIn);
  return out;
}

Napi::Value AddonEngine::Cancel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!core_) return env.Undefined();  // cancelling after dispose is a no-op
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "cancel(id)");
  core_->Cancel(info[0].As<Napi::Number>().Uint32Value());
  return env.Undefined();
}

Napi::Value AddonEngine::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EngineStats s = Core(env).Stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("slots", s.slots);
  o.Set("slotsBusy", s.slotsBusy);
  o.Set("queued", s.queued);
  o.Set("kvCells", Napi::Number::New(env, static_cast<double>(s.kvCells)));
  o.Set("kvUsed", Napi::Number::New(env, static_cast<double>(s.kvUsed)));
  o.Set("kvUsedRatio", s.kvCells > 0 ? static_cast<double>(s.kvUsed) / static_cast<double>(s.kvCells) : 0.0);
  o.Set("tokensPerSecond", s.tokensPerSecond);
  o.Set("tokensGenerated", Napi::Number::New(env, static_cast<double>(s.tokensGenerated)));
  o.Set("promptTokensProcessed", Napi::Number::New(env, static_cast<double>(s.promptTokensProcessed)));
  o.Set("requestsDone", Napi::Number::New(env, static_cast<double>(s.requestsDone)));
  o.Set("decodeSteps", Napi::Number::New(env, static_cast<double>(s.decodeSteps)));
  o.Set("grammarFastSamples", Napi::Number::New(env, static_cast<double>(s.grammarFastSamples)));
  o.Set("bestLogitsSamples", Napi::Number::New(env, static_cast<double>(s.bestLogitsSamples)));
  o.Set("parallelSamplingSteps", Napi::Number::New(env, static_cast<double>(s.parallelSamplingSteps)));
  o.Set("grammarFullSamples", Napi::Number::New(env, static_cast<double>(s.grammarFullSamples)));
  o.Set("grammarKnownStates", Napi::Number::New(env, static_cast<double>(s.grammarKnownStates)));
  o.Set("grammarSkippedSteps", Napi::Number::New(env, static_cast<double>(s.grammarSkippedSteps)));
  o.Set("grammarCacheHits", Napi::Number::New(env, static_cast<double>(s.grammarCacheHits)));
  o.Set("grammarCacheMisses", Napi::Number::New(env, static_cast<double>(s.grammarCacheMisses)));
  o.Set("prefixCopies", Napi::Number::New(env, static_cast<double>(s.prefixCopies)));
  o.Set("prefixTokensCopied", Napi::Number::New(env, static_cast<double>(s.prefixTokensCopied)));
  o.Set("prefixWaits", Napi::Number::New(env, static_cast<double>(s.prefixWaits)));
  o.Set("promptCacheSaves", Napi::Number::New(env, static_cast<double>(s.promptCacheSaves)));
  o.Set("promptCacheRestores", Napi::Number::New(env, static_cast<double>(s.promptCacheRestores)));
  o.Set("promptCacheTokensRestored", Napi::Number::New(env, static_cast<double>(s.promptCacheTokensRestored)));
  o.Set("promptCacheEvictions", Napi::Number::New(env, static_cast<double>(s.promptCacheEvictions)));
  o.Set("promptCacheAllocations", Napi::Number::New(env, static_cast<double>(s.promptCacheAllocations)));
  o.Set("promptCacheBytes", Napi::Number::New(env, static_cast<double>(s.promptCacheBytes)));
  o.Set("promptCacheEntries", Napi::Number::New(env, static_cast<double>(s.promptCacheEntries)));
  o.Set("promptCacheMs", s.promptCacheMs);
  return o;
}

Napi::Value AddonEngine::Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<DeviceMemory> memory = ContextMemory(Core(env).context());
  Napi::Array out = Napi::Array::New(env, memory.size());
  for (size_t i = 0; i < memory.size(); ++i) out.Set(static_cast<uint32_t>(i), DeviceMemoryJs(env, memory[i]));
  return out;
}

Napi::Value AddonEngine::Options(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const EngineOptions& opt = Core(env).options();
  Napi::Object o = Napi::Object::New(env);
  o.Set("slots", opt.slots);
  o.Set("contextSize", opt.contextSize);
  o.Set("batchSize", opt.batchSize);
  o.Set("threads", opt.threads);
  o.Set("maxQueue", opt.maxQueue);
  o.Set("kvUnified", opt.kvUnified);
  o.Set("kvSize", opt.kvSize);
  o.Set("flashAttention", opt.flashAttention);
  o.Set("prefixSharing", opt.prefixSharing);
  o.Set("swaFull", opt.swaFull);
  o.Set("promptCacheMiB", opt.promptCacheMiB);
  o.Set("bestLogitsOnly", opt.bestLogitsOnly);
  o.Set("parallelSampling", opt.parallelSampling);
  o.Set("memoryBytes", Napi::Number::New(env, static_cast<double>(Core(env).memoryBytes())));
  return o;
}

Napi::Value AddonEngine::Dispose(const Napi::CallbackInfo& info) {
  Shutdown();
  return info.Env().Undefined();
}

}  // namespace lmserve
