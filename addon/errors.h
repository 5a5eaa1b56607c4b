// Error codes shared with packages/protocol (ErrorCode). The TS layer maps `code` to typed errors.
#pragma once
#include <napi.h>
#include <stdexcept>
#include <string>

namespace lmserve {

namespace codes {
constexpr const char* kModelFileNotFound = "MODEL_FILE_NOT_FOUND";
constexpr const char* kInvalidModelFile = "INVALID_MODEL_FILE";
constexpr const char* kUnsupportedArchitecture = "UNSUPPORTED_ARCHITECTURE";
constexpr const char* kLoadAborted = "LOAD_ABORTED";
constexpr const char* kContextOverflow = "CONTEXT_OVERFLOW";
constexpr const char* kInvalidGrammar = "INVALID_GRAMMAR";
constexpr const char* kInvalidRequest = "INVALID_REQUEST";
constexpr const char* kQueueFull = "QUEUE_FULL";
constexpr const char* kDisposed = "DISPOSED";
constexpr const char* kKvCacheFull = "KV_CACHE_FULL";
constexpr const char* kInternal = "INTERNAL";
}  // namespace codes

// A C++ exception that carries a stable code; converted to a JS Error with `.code`.
class CodedError : public std::runtime_error {
 public:
  CodedError(std::string code, const std::string& message) : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

inline Napi::Error MakeCodedError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

// Calls JS from a thread-safe-function callback, which must not let a C++ exception escape: a
// thread being terminated makes every call fail. A JS exception thrown by the callback itself is
// re-raised as uncaught (as Node does for event handlers); a failing env is ignored.
inline void CallJsSafely(Napi::Function callback, const std::initializer_list<napi_value>& args) {
  try {
    callback.Call(args);
  } catch (const Napi::Error& e) {
    try {
      e.ThrowAsJavaScriptException();
    } catch (...) {
    }
  } catch (...) {
  }
}

[[noreturn]] inline void ThrowCoded(Napi::Env env, const std::string& code, const std::string& message) {
  throw MakeCodedError(env, code, message);
}

}  // namespace lmserve
