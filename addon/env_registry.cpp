#include "env_registry.h"

namespace lmserve {

namespace {
void CleanupEnv(Napi::Env, EnvRegistry* registry) {
  registry->DisposeAll();
  delete registry;
}
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

uint64_t EnvRegistry::Add(std::function<void()> dispose) {
  uint64_t handle = next_++;
  live_.emplace(handle, std::move(dispose));
  return handle;
}

void EnvRegistry::Remove(uint64_t handle) { live_.erase(handle); }

void EnvRegistry::DisposeAll() {
  auto live = std::move(live_);
  live_.clear();
  for (auto& [handle, dispose] : live) dispose();
}

}  // namespace lmserve
