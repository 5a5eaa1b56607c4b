// Error codes shared with packages/protocol (ErrorCode). The TS layer maps `code` to typed errors.
#pragma once
#include <napi.h>

#include <stdexcept>
#include <string>
#include <utility>

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

// Every code the addon can raise, with the HTTP status it maps to. Exported as errorCodes(); a
// test checks it against ErrorStatus in @lmserve/protocol and checks that every codes::k*
// constant used in addon/ is listed here, so a new code cannot reach JS without a status.
struct ErrorCodeStatus {
  const char* code;
  int status;
};
constexpr ErrorCodeStatus kErrorCodes[] = {
    {codes::kModelFileNotFound, 500},
    {codes::kInvalidModelFile, 500},
    {codes::kUnsupportedArchitecture, 500},
    {codes::kLoadAborted, 503},
    {codes::kContextOverflow, 400},
    {codes::kInvalidGrammar, 400},
    {codes::kInvalidRequest, 400},
    {codes::kQueueFull, 429},
    {codes::kDisposed, 503},
    {codes::kKvCacheFull, 503},
    {codes::kInternal, 500},
};

// A C++ exception that carries a stable code (and, for a bad request, the field at fault);
// converted to a JS Error with `.code` (and `.field`). Code that runs without an env (the
// decode thread, helpers it shares with the JS thread) throws this, never a Napi::Error.
class CodedError : public std::runtime_error {
 public:
  CodedError(std::string code, const std::string& message, std::string field = {})
      : std::runtime_error(message), code_(std::move(code)), field_(std::move(field)) {}
  const std::string& code() const { return code_; }
  const std::string& field() const { return field_; }

 private:
  std::string code_;
  std::string field_;
};

inline Napi::Error MakeCodedError(Napi::Env env, const std::string& code, const std::string& message,
                                  const std::string& field = {}) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  if (!field.empty()) err.Set("field", Napi::String::New(env, field));
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

[[noreturn]] inline void ThrowCoded(Napi::Env env, const std::string& code, const std::string& message,
                                    const std::string& field = {}) {
  throw MakeCodedError(env, code, message, field);
}

// Runs the body of a JS-facing function. NODE_ADDON_API_CPP_EXCEPTIONS_ALL already keeps any
// C++ exception from terminating the process, but turns it into an Error without a code; here a
// CodedError keeps its code and field, and anything else becomes INTERNAL. Napi::Error (thrown
// with an env, already coded or a TypeError) passes through unchanged.
template <typename Body>
auto RunCoded(Napi::Env env, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const CodedError& e) {
    throw MakeCodedError(env, e.code(), e.what(), e.field());
  } catch (const std::exception& e) {
    throw MakeCodedError(env, codes::kInternal, e.what());
  }
}

// An exported function registered through RunCoded: Napi::Function::New(env, Coded<Fn>).
template <Napi::Value (*Fn)(const Napi::CallbackInfo&)>
Napi::Value Coded(const Napi::CallbackInfo& info) {
  return RunCoded(info.Env(), [&]() { return Fn(info); });
}

// ObjectWrap whose methods are registered through RunCoded: CodedMethod<&T::Method>("name").
// Every class the addon exports derives from it, so no method can be registered without it.
template <typename T>
class CodedObjectWrap : public Napi::ObjectWrap<T> {
 public:
  using Napi::ObjectWrap<T>::ObjectWrap;

 protected:
  using Method = Napi::Value (T::*)(const Napi::CallbackInfo&);

  template <Method M>
  static Napi::ClassPropertyDescriptor<T> CodedMethod(const char* name) {
    return Napi::ObjectWrap<T>::InstanceMethod(name, static_cast<Method>(&CodedObjectWrap::Invoke<M>));
  }
  template <Method M>
  static Napi::ClassPropertyDescriptor<T> CodedGetter(const char* name) {
    return Napi::ObjectWrap<T>::InstanceAccessor(name, static_cast<Method>(&CodedObjectWrap::Invoke<M>), nullptr);
  }

 private:
  template <Method M>
  Napi::Value Invoke(const Napi::CallbackInfo& info) {
    return RunCoded(info.Env(), [&]() { return (static_cast<T*>(this)->*M)(info); });
  }
};

}  // namespace lmserve
