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

}  // namespace lmserve
