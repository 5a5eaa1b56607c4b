// JS class `Engine`: a continuous-batching EngineCore plus the thread-safe function that
// delivers its events to JS, one call per decode step (all sequences' tokens together).
#pragma once
#include <napi.h>

#include <memory>

#include "engine_core.h"

namespace lmserve {

class AddonEngine;
void CallEngineEvents(Napi::Env env, Napi::Function callback, AddonEngine* self, std::vector<EngineEvent>* events);

class AddonEngine : public Napi::ObjectWrap<AddonEngine> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  // model.createEngine(options, onEvents) -> Promise<Engine>
  static Napi::Value Create(const Napi::CallbackInfo& info, std::shared_ptr<ModelHandle> model);
  explicit AddonEngine(const Napi::CallbackInfo& info);
  ~AddonEngine() override;

  void OnEvents(Napi::Env env, Napi::Function callback, std::vector<EngineEvent>* events);

 private:
  using EventTsfn = Napi::TypedThreadSafeFunction<AddonEngine, std::vector<EngineEvent>, CallEngineEvents>;

  Napi::Value Submit(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Options(const Napi::CallbackInfo& info);
  EngineCore& Core(Napi::Env env);
  void Shutdown();
  void SetActive(Napi::Env env, int32_t delta);

  std::unique_ptr<EngineCore> core_;
  EventTsfn tsfn_;
  bool tsfnLive_ = false;
  int32_t active_ = 0;
  uint64_t registryHandle_ = 0;
  Napi::Env env_;
};

}  // namespace lmserve
