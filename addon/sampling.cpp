#include "sampling.h"

#include <cmath>
#include <limits>

#include "errors.h"
#include "log_capture.h"

namespace lmserve {

namespace {

class FieldReader {
 public:
  FieldReader(Napi::Env env, Napi::Object obj) : env_(env), obj_(obj) {}

  bool Has(const char* name) const {
    Napi::Value v = obj_.Get(name);
    return !v.IsUndefined() && !v.IsNull();
  }

  double Number(const char* name, double min, double max) const {
    Napi::Value v = obj_.Get(name);
    if (!v.IsNumber()) Fail(name, "must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d < min || d > max) {
      Fail(name, "must be between " + Format(min) + " and " + Format(max));
    }
    return d;
  }

  int64_t Integer(const char* name, double min, double max) const {
    double d = Number(name, min, max);
    if (std::floor(d) != d) Fail(name, "must be an integer");
    return static_cast<int64_t>(d);
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

  Napi::Value Get(const char* name) const { return obj_.Get(name); }

  [[noreturn]] void Fail(const std::string& name, const std::string& what) const {
    ThrowCoded(env_, codes::kInvalidRequest, "params." + name + " " + what);
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

GenerationParams ParseGenerationParams(Napi::Env env, Napi::Value value, int32_t nVocab) {
  GenerationParams p;
  if (value.IsUndefined() || value.IsNull()) return p;
  if (!value.IsObject()) ThrowCoded(env, codes::kInvalidRequest, "params must be an object");
  FieldReader r(env, value.As<Napi::Object>());
  constexpr double kBig = 1e15;
  if (r.Has("maxTokens")) p.maxTokens = static_cast<int32_t>(r.Integer("maxTokens", -1, 1 << 30));
  if (r.Has("temperature")) p.temperature = static_cast<float>(r.Number("temperature", 0, 100));
  if (r.Has("topK")) p.topK = static_cast<int32_t>(r.Integer("topK", 0, 1 << 30));
  if (r.Has("topP")) p.topP = static_cast<float>(r.Number("topP", 0, 1));
  if (r.Has("minP")) p.minP = static_cast<float>(r.Number("minP", 0, 1));
  if (r.Has("repeatPenalty")) p.repeatPenalty = static_cast<float>(r.Number("repeatPenalty", 0, 100));
  if (r.Has("repeatLastN")) p.repeatLastN = static_cast<int32_t>(r.Integer("repeatLastN", -1, 1 << 20));
  if (r.Has("presencePenalty")) p.presencePenalty = static_cast<float>(r.Number("presencePenalty", -100, 100));
  if (r.Has("frequencyPenalty")) p.frequencyPenalty = static_cast<float>(r.Number("frequencyPenalty", -100, 100));
  if (r.Has("seed")) p.seed = static_cast<uint32_t>(r.Integer("seed", 0, 4294967295.0));
  if (r.Has("ignoreEos")) p.ignoreEos = r.Boolean("ignoreEos");
  if (r.Has("grammar")) p.grammar = r.String("grammar");
  if (r.Has("grammarRoot")) p.grammarRoot = r.String("grammarRoot");
  if (r.Has("stop")) {
    Napi::Value v = r.Get("stop");
    if (v.IsString()) {
      p.stop.push_back(v.As<Napi::String>().Utf8Value());
    } else if (v.IsArray()) {
      Napi::Array a = v.As<Napi::Array>();
      if (a.Length() > 16) r.Fail("stop", "may hold at most 16 strings");
      for (uint32_t i = 0; i < a.Length(); ++i) {
        Napi::Value s = a.Get(i);
        if (!s.IsString()) r.Fail("stop[" + std::to_string(i) + "]", "must be a string");
        p.stop.push_back(s.As<Napi::String>().Utf8Value());
      }
    } else {
      r.Fail("stop", "must be a string or an array of strings");
    }
  }
  if (r.Has("logitBias")) {
    // An array of [tokenId, bias] pairs; bias <= -100 bans the token (as OpenAI's -100 does).
    Napi::Value v = r.Get("logitBias");
    if (!v.IsArray()) r.Fail("logitBias", "must be an array of [tokenId, bias] pairs");
    Napi::Array a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Value e = a.Get(i);
      std::string field = "logitBias[" + std::to_string(i) + "]";
      if (!e.IsArray() || e.As<Napi::Array>().Length() != 2) r.Fail(field, "must be a [tokenId, bias] pair");
      Napi::Array pair = e.As<Napi::Array>();
      Napi::Value id = pair.Get(0u), bias = pair.Get(1u);
      if (!id.IsNumber() || !bias.IsNumber()) r.Fail(field, "must hold two numbers");
      double idd = id.As<Napi::Number>().DoubleValue(), b = bias.As<Napi::Number>().DoubleValue();
      if (std::floor(idd) != idd || idd < 0 || idd >= nVocab) {
        r.Fail(field, "token id must be an integer in 0.." + std::to_string(nVocab - 1));
      }
      if (!std::isfinite(b) || b < -kBig || b > kBig) r.Fail(field, "bias must be a finite number");
      float fb = b <= -100 ? -std::numeric_limits<float>::infinity() : static_cast<float>(b);
      p.logitBias.emplace_back(static_cast<llama_token>(idd), fb);
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
