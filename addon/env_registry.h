// Per-env bookkeeping: the addon is loaded by several worker threads of one process, each its
// own napi_env. Native objects register here so that the env's cleanup hook (a thread exiting)
// frees them even if JS never called dispose().
#pragma once
#include <napi.h>

#include <functional>
#include <unordered_map>

namespace lmserve {

class EnvRegistry {
 public:
  static EnvRegistry& For(Napi::Env env);
  // Returns a handle for Remove(); `dispose` runs at env cleanup if still registered.
  uint64_t Add(std::function<void()> dispose);
  void Remove(uint64_t handle);
  void DisposeAll();

  Napi::FunctionReference modelConstructor;
  Napi::FunctionReference engineConstructor;

 private:
  uint64_t next_ = 1;
  std::unordered_map<uint64_t, std::function<void()>> live_;
};

}  // namespace lmserve
