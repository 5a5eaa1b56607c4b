// Per-env state: the addon is loaded by several worker threads of one process, each its own
// napi_env, so the class constructors live in instance data, not in globals. (Native objects
// free themselves at env teardown through their own cleanup hooks.)
#pragma once
#include <napi.h>


namespace lmserve {

class EnvRegistry {
 public:
  static EnvRegistry& For(Napi::Env env);

  Napi::FunctionReference modelConstructor;
  Napi::FunctionReference engineConstructor;
};

}  // namespace lmserve
