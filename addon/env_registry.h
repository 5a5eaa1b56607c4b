// Per-env state: the addon is loaded by several worker threads of one process, each its own
// napi_env, so the class constructors live in instance data, not in globals. (Native objects
// free themselves at env teardown through their own cleanup hooks.)
#pragma once
#include <napi.h>

#include <functional>


namespace lmserve {

class EnvRegistry {
 public:
  static EnvRegistry& For(Napi::Env env);

  Napi::FunctionReference modelConstructor;
  Napi::FunctionReference engineConstructor;
};

// Runs a callback when the env (a worker thread) is torn down, unless removed first. Native
// objects install it after their thread-safe functions: hooks run in reverse order, so theirs
// runs while those TSFNs are still valid.
class EnvTeardownHook {
 public:
  EnvTeardownHook() = default;
  EnvTeardownHook(const EnvTeardownHook&) = delete;
  EnvTeardownHook& operator=(const EnvTeardownHook&) = delete;
  ~EnvTeardownHook() { Remove(); }

  void Install(Napi::Env env, std::function<void()> onTeardown);
  // No-op when the hook already ran or was never installed.
  void Remove();

 private:
  static void Run(EnvTeardownHook* self);

  napi_env env_ = nullptr;
  std::function<void()> onTeardown_;
  Napi::Env::CleanupHook<void (*)(EnvTeardownHook*), EnvTeardownHook> hook_;
  bool live_ = false;
};

}  // namespace lmserve
