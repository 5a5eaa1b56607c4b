#include "sampling.h"

#include <cmath>
#include <limits>
#include <type_traits>

#include "errors.h"
#include "log_capture.h"

namespace lmserve {

namespace {

template <auto Member>
double GetField(const GenerationParams& p) {
  return static_cast<double>(p.*Member);
}

template <auto Member>
void SetField(GenerationParams& p, double v) {
  using T = std::remove_reference_t<decltype(p.*Member)>;
  if constexpr (std::is_same_v<T, bool>) {
    p.*Member = v != 0;
  } else {
    p.*Member = static_cast<T>(v);
  }
}

template <auto Member>
ParamSpec Numeric(const char* name, ParamType type, double min, double max) {
  ParamSpec s{name, type};
  s.min = min;
  s.max = max;
  s.get = &GetField<Member>;
  s.set = &SetField<Member>;
  return s;
}

std::vector<ParamSpec> BuildSpecs() {
  std::vector<ParamSpec> specs = {
      Numeric<&GenerationParams::maxTokens>("maxTokens", ParamType::Int, -1, 1 << 30),
      Numeric<&GenerationParams::temperature>("temperature", ParamType::Float, 0, 100),
      Numeric<&GenerationParams::topK>("topK", ParamType::Int, 0, 1 << 30),
      Numeric<&GenerationParams::topP>("topP", ParamType::Float, 0, 1),
      Numeric<&GenerationParams::minP>("minP", ParamType::Float, 0, 1),
      Numeric<&GenerationParams::repeatPenalty>("repeatPenalty", ParamType::Float, 0, 100),
      Numeric<&GenerationParams::repeatLastN>("repeatLastN", ParamType::Int, -1, 1 << 20),
      // OpenAI's range; the HTTP edge takes the same.
      Numeric<&GenerationParams::presencePenalty>("presencePenalty", ParamType::Float, -2, 2),
      Numeric<&GenerationParams::frequencyPenalty>("frequencyPenalty", ParamType::Float, -2, 2),
      Numeric<&GenerationParams::seed>("seed", ParamType::Int, 0, 4294967295.0),
      Numeric<&GenerationParams::ignoreEos>("ignoreEos", ParamType::Bool, 0, 1),
  };
  ParamSpec stop{"stop", ParamType::StringList};
  stop.max = 16;
  stop.list = &GenerationParams::stop;
  specs.push_back(stop);
  ParamSpec grammar{"grammar", ParamType::String};
  grammar.text = &GenerationParams::grammar;
  specs.push_back(grammar);
  ParamSpec grammarRoot{"grammarRoot", ParamType::String};
  grammarRoot.text = &GenerationParams::grammarRoot;
  specs.push_back(grammarRoot);
  specs.push_back(ParamSpec{"logitBias", ParamType::LogitBias});
  return specs;
}

class FieldReader {
 public:
  FieldReader(Napi::Env env, Napi::Object obj) : env_(env), obj_(obj) {}

  bool Has(const char* name) const {
    Napi::Value v = obj_.Get(name);
    return !v.IsUndefined() && !v.IsNull();
  }

  double Number(const ParamSpec& spec) const {
    Napi::Value v = obj_.Get(spec.name);
    if (!v.IsNumber()) Fail(spec.name, "must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d < spec.min || d > spec.max) {
      Fail(spec.name, "must be between " + Format(spec.min) + " and " + Format(spec.max));
    }
    if (spec.type == ParamType::Int && std::floor(d) != d) Fail(spec.name, "must be an integer");
    return d;
  }

  bool Boolean(const char* name) const {
    Napi::Value v = obj_.Get(name);
    if (!v.IsBoolean()) Fail(name, "must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }

  std::string String(const char* name) const {
    Napi::Value v = obj_.Get(name);
    if (!v.IsString()) Fail(name, "must be a string");
    return v.As<Napi::String>().Utf8Value();
  }

  std::vector<std::string> StringList(const ParamSpec& spec) const {
    std::vector<std::string> out;
    Napi::Value v = obj_.Get(spec.name);
    if (v.IsString()) {
      out.push_back(v.As<Napi::String>().Utf8Value());
      return out;
    }
    if (!v.IsArray()) Fail(spec.name, "must be a string or an array of strings");
    Napi::Array a = v.As<Napi::Array>();
    if (a.Length() > spec.max) Fail(spec.name, "may hold at most " + Format(spec.max) + " strings");
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Value s = a.Get(i);
      if (!s.IsString()) Fail(std::string(spec.name) + "[" + std::to_string(i) + "]", "must be a string");
      out.push_back(s.As<Napi::String>().Utf8Value());
    }
    return out;
  }

  // An array of [tokenId, bias] pairs; bias <= -100 bans the token (as OpenAI's -100 does).
  std::vector<std::pair<llama_token, float>> LogitBias(const ParamSpec& spec, int32_t nVocab) const {
    constexpr double kBig = 1e15;
    std::vector<std::pair<llama_token, float>> out;
    Napi::Value v = obj_.Get(spec.name);
    if (!v.IsArray()) Fail(spec.name, "must be an array of [tokenId, bias] pairs");
    Napi::Array a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Value e = a.Get(i);
      std::string field = std::string(spec.name) + "[" + std::to_string(i) + "]";
      if (!e.IsArray() || e.As<Napi::Array>().Length() != 2) Fail(field, "must be a [tokenId, bias] pair");
      Napi::Array pair = e.As<Napi::Array>();
      Napi::Value id = pair.Get(0u), bias = pair.Get(1u);
      if (!id.IsNumber() || !bias.IsNumber()) Fail(field, "must hold two numbers");
      double idd = id.As<Napi::Number>().DoubleValue(), b = bias.As<Napi::Number>().DoubleValue();
      if (std::floor(idd) != idd || idd < 0 || idd >= nVocab) {
        Fail(field, "token id must be an integer in 0.." + std::to_string(nVocab - 1));
      }
      if (!std::isfinite(b) || b < -kBig || b > kBig) Fail(field, "bias must be a finite number");
      float fb = b <= -100 ? -std::numeric_limits<float>::infinity() : static_cast<float>(b);
      out.emplace_back(static_cast<llama_token>(idd), fb);
    }
    return out;
  }

  [[noreturn]] void Fail(const std::string& name, const std::string& what) const {
    ThrowCoded(env_, codes::kInvalidRequest, "params." + name + " " + what, "params." + name);
  }

 private:
  static std::string Format(double d) {
    if (d >= 1e15) return "1e15";
    if (d <= -1e15) return "-1e15";
    std::string s = std::to_string(d);
    s.erase(s.find_last_not_of('0') + 1);
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
  }

  Napi::Env env_;
  Napi::Object obj_;
};

}  // namespace

const char* ParamTypeName(ParamType type) {
  switch (type) {
    case ParamType::Int: return "int";
    case ParamType::Float: return "float";
    case ParamType::Bool: return "bool";
    case ParamType::String: return "string";
    case ParamType::StringList: return "stringList";
    case ParamType::LogitBias: return "logitBias";
  }
  return "unknown";
}

const std::vector<ParamSpec>& GenerationParamSpecs() {
  static const std::vector<ParamSpec> specs = BuildSpecs();
  return specs;
}

Napi::Value ParamSpecsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const GenerationParams defaults;
  const auto& specs = GenerationParamSpecs();
  Napi::Array out = Napi::Array::New(env, specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& spec = specs[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", spec.name);
    o.Set("type", ParamTypeName(spec.type));
    switch (spec.type) {
      case ParamType::Int:
      case ParamType::Float:
        o.Set("min", spec.min);
        o.Set("max", spec.max);
        // Floats are stored as float (0.8f is 0.800000011920929): report the decimal written in
        // GenerationParams, which six digits recover.
        o.Set("default", spec.type == ParamType::Float ? std::round(spec.get(defaults) * 1e6) / 1e6
                                                       : spec.get(defaults));
        break;
      case ParamType::Bool:
        o.Set("default", spec.get(defaults) != 0);
        break;
      case ParamType::String:
        o.Set("default", defaults.*spec.text);
        break;
      case ParamType::StringList: {
        o.Set("max", spec.max);
        const auto& list = defaults.*spec.list;
        Napi::Array d = Napi::Array::New(env, list.size());
        for (size_t k = 0; k < list.size(); ++k) d.Set(static_cast<uint32_t>(k), list[k]);
        o.Set("default", d);
        break;
      }
      case ParamType::LogitBias:
        o.Set("default", Napi::Array::New(env, 0));
        break;
    }
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

GenerationParams ParseGenerationParams(Napi::Env env, Napi::Value value, int32_t nVocab) {
  GenerationParams p;
  if (value.IsUndefined() || value.IsNull()) return p;
  if (!value.IsObject()) ThrowCoded(env, codes::kInvalidRequest, "params must be an object", "params");
  FieldReader r(env, value.As<Napi::Object>());
  for (const ParamSpec& spec : GenerationParamSpecs()) {
    if (!r.Has(spec.name)) continue;
    switch (spec.type) {
      case ParamType::Int:
      case ParamType::Float:
        spec.set(p, r.Number(spec));
        break;
      case ParamType::Bool:
        spec.set(p, r.Boolean(spec.name) ? 1 : 0);
        break;
      case ParamType::String:
        p.*spec.text = r.String(spec.name);
        break;
      case ParamType::StringList:
        p.*spec.list = r.StringList(spec);
        break;
      case ParamType::LogitBias:
        p.logitBias = r.LogitBias(spec, nVocab);
        break;
    }
  }
  return p;
}

std::string CheckGrammar(const llama_vocab* vocab, const std::string& grammar, const std::string& root) {
  LogCapture capture;
  llama_sampler* s = llama_sampler_init_grammar(vocab, grammar.c_str(), root.c_str());
  if (s != nullptr) {
    llama_sampler_free(s);
    return {};
  }
  std::string reason = capture.Tail(3);
  return reason.empty() ? "the grammar does not parse" : reason;
}

SamplerPtr BuildSamplerChain(const llama_model* model, const GenerationParams& p) {
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int32_t nVocab = llama_vocab_n_tokens(vocab);
  llama_sampler_chain_params cp = llama_sampler_chain_default_params();
  cp.no_perf = true;
  SamplerPtr chain(llama_sampler_chain_init(cp));

  std::vector<llama_logit_bias> biases;
  for (const auto& [id, bias] : p.logitBias) biases.push_back({id, bias});
  if (p.ignoreEos && p.grammar.empty()) {
    // As llama-server does: end-of-generation tokens can never be sampled.
    for (llama_token id = 0; id < nVocab; ++id) {
      if (llama_vocab_is_eog(vocab, id)) biases.push_back({id, -std::numeric_limits<float>::infinity()});
    }
  }
  if (!biases.empty()) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_logit_bias(nVocab, static_cast<int32_t>(biases.size()),
                                                                       biases.data()));
  }
  if (!p.grammar.empty()) {
    LogCapture capture;
    llama_sampler* g = llama_sampler_init_grammar(vocab, p.grammar.c_str(), p.grammarRoot.c_str());
    if (g == nullptr) {
      std::string reason = capture.Tail(3);
      throw CodedError(codes::kInvalidGrammar, "params.grammar does not parse: " +
                                                   (reason.empty() ? std::string("invalid GBNF") : reason));
    }
    llama_sampler_chain_add(chain.get(), g);
  }
  if (p.repeatPenalty != 1.0f || p.presencePenalty != 0.0f || p.frequencyPenalty != 0.0f) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_penalties(nVocab, p.repeatLastN, p.repeatPenalty,
                                                                      p.frequencyPenalty, p.presencePenalty));
  }
  if (p.temperature <= 0.0f) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_greedy());
    return chain;
  }
  if (p.topK > 0) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_k(p.topK));
  if (p.topP < 1.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_p(p.topP, 1));
  if (p.minP > 0.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_min_p(p.minP, 1));
  llama_sampler_chain_add(chain.get(), llama_sampler_init_temp(p.temperature));
  llama_sampler_chain_add(chain.get(), llama_sampler_init_dist(p.seed));
  return chain;
}

}  // namespace lmserve
