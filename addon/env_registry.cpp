#include "env_registry.h"

namespace lmserve {

namespace {
void CleanupEnv(Napi::Env, EnvRegistry* registry) { delete registry; }
}  // namespace

EnvRegistry& EnvRegistry::For(Napi::Env env) {
  auto* registry = env.GetInstanceData<EnvRegistry>();
  if (registry == nullptr) {
    registry = new EnvRegistry();
    // Instance data is finalized when the env (a worker thread, or the main isolate) goes away.
    env.SetInstanceData<EnvRegistry, CleanupEnv>(registry);
  }
  return *registry;
}

void EnvTeardownHook::Install(Napi::Env env, std::function<void()> onTeardown) {
  Remove();
  env_ = env;
  onTeardown_ = std::move(onTeardown);
  hook_ = env.AddCleanupHook(&EnvTeardownHook::Run, this);
  live_ = true;
}

void EnvTeardownHook::Remove() {
  if (!live_) return;
  live_ = false;
  hook_.Remove(Napi::Env(env_));
}

void EnvTeardownHook::Run(EnvTeardownHook* self) {
  self->live_ = false;  // a hook that ran must not be removed
  auto onTeardown = std::move(self->onTeardown_);
  onTeardown();
}

}  // namespace lmserve
