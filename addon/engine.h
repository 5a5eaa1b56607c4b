// JS class `Engine`: a continuous-batching EngineCore plus the thread-safe function that
// delivers its events to JS, one call per decode step (all sequences' tokens together).
#pragma once
#include <napi.h>

#include <memory>

#include "engine_core.h"
#include "env_registry.h"
#include "errors.h"

namespace lmserve {

// Engine options from JS ({slots, contextSize, batchSize, ...}); throws INVALID_REQUEST naming the field.
EngineOptions ParseEngineOptions(Napi::Env env, Napi::Value value);

struct EngineEventState;
void CallEngineEvents(Napi::Env env, Napi::Function callback, EngineEventState* state,
                      std::vector<EngineEvent>* events);
using EngineEventTsfn = Napi::TypedThreadSafeFunction<EngineEventState, std::vector<EngineEvent>, CallEngineEvents>;

// Delivery state, owned by the thread-safe function: it outlives the JS Engine object until the
// last queued event batch has been delivered (the TSFN finalizer frees it).
struct EngineEventState {
  EngineEventTsfn tsfn;
  int32_t active = 0;     // submitted requests not yet done; the TSFN keeps the loop alive while > 0
  bool released = false;  // the engine released the TSFN; no more Ref/Unref
  void SetActive(Napi::Env env, int32_t delta);
};

class AddonEngine : public CodedObjectWrap<AddonEngine> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  // model.createEngine(options, onEvents) -> Promise<Engine>
  static Napi::Value Create(const Napi::CallbackInfo& info, std::shared_ptr<ModelHandle> model);
  // new Engine(External<std::unique_ptr<EngineCore>>, onEvents): moves the core out of the
  // pointer the External points at, so exactly one owner holds it at any time (a constructor
  // that throws after that frees it once, through core_).
  explicit AddonEngine(const Napi::CallbackInfo& info);
  ~AddonEngine() override;

 private:
  Napi::Value Submit(const Napi::CallbackInfo& info);
  // memory() -> [{name, backend, type, model, context, compute}]: what the context holds per
  // device (host memory last), as llama.cpp accounts it.
  Napi::Value Memory(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Options(const Napi::CallbackInfo& info);
  EngineCore& Core(Napi::Env env);
  void Shutdown();

  std::unique_ptr<EngineCore> core_;
  // Bytes reported to V8 (AdjustExternalMemory) for the context and batch; taken back once.
  int64_t reportedMemory_ = 0;
  EngineEventState* events_ = nullptr;  // valid until Shutdown() releases the TSFN
  // Installed after the TSFN: the decode thread is joined while the TSFN it calls is valid.
  EnvTeardownHook teardown_;
  Napi::Env env_;
};

}  // namespace lmserve
