#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include "errors.h"
#include "log_capture.h"
// llama.cpp's grammar parser (an internal header of the pinned source, reached through its
// public include directory): driven here so that its error message is not lost to stderr.
#include "../src/llama-grammar.h"

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
      Numeric<&GenerationParams::logprobs>("logprobs", ParamType::Int, -1, kMaxTopLogprobs),
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

TokenLogprob ComputeLogprob(const float* logits, int32_t nVocab, llama_token token, int32_t top) {
  TokenLogprob out;
  out.token = token;
  float maxLogit = -INFINITY;
  for (int32_t i = 0; i < nVocab; ++i) maxLogit = std::max(maxLogit, logits[i]);
  double sum = 0;
  for (int32_t i = 0; i < nVocab; ++i) sum += std::exp(static_cast<double>(logits[i] - maxLogit));
  const float logZ = maxLogit + static_cast<float>(std::log(sum));
  out.logprob = (token >= 0 && token < nVocab) ? logits[token] - logZ : -INFINITY;
  const int32_t n = std::min(std::max(top, 0), nVocab);
  if (n > 0) {
    std::vector<llama_token> ids(static_cast<size_t>(nVocab));
    for (int32_t i = 0; i < nVocab; ++i) ids[static_cast<size_t>(i)] = i;
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(),
                      [logits](llama_token a, llama_token b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    out.top.reserve(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) out.top.emplace_back(ids[static_cast<size_t>(i)], logits[ids[static_cast<size_t>(i)]] - logZ);
  }
  return out;
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

// ---------------------------------------------------------------------------------------------
// Grammars

namespace {

// llama.cpp's parse_space (src/llama-grammar.cpp, a static function there): blanks, comments
// and, where allowed, newlines.
const char* SkipSpace(const char* pos, bool newlineOk) {
  while (*pos == ' ' || *pos == '\t' || *pos == '#' || (newlineOk && (*pos == '\r' || *pos == '\n'))) {
    if (*pos == '#') {
      while (*pos && *pos != '\r' && *pos != '\n') pos++;
    } else {
      pos++;
    }
  }
  return pos;
}

std::string Quote(const std::string& name) { return "'" + name + "'"; }

// At most `max` bytes of `text` up to its first line break, cut on a UTF-8 character boundary.
std::string Snippet(const std::string& text, size_t max) {
  size_t end = text.find_first_of("\r\n");
  if (end == std::string::npos) end = text.size();
  bool cut = end > max;
  if (cut) {
    end = max;
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) end--;
  }
  return text.substr(0, end) + (cut ? "..." : "");
}

// llama.cpp's parser messages end with " at " and the whole rest of the grammar text: turn that
// rest into a line and column and a short excerpt.
std::string DescribeParseError(const std::string& grammar, const std::string& what) {
  for (size_t at = what.find(" at "); at != std::string::npos; at = what.find(" at ", at + 1)) {
    const size_t restLen = what.size() - (at + 4);
    if (restLen > grammar.size() || what.compare(at + 4, restLen, grammar, grammar.size() - restLen, restLen) != 0) {
      continue;
    }
    const size_t offset = grammar.size() - restLen;
    size_t line = 1, lineStart = 0;
    for (size_t k = 0; k < offset; ++k) {
      if (grammar[k] == '\n') {
        line++;
        lineStart = k + 1;
      }
    }
    std::string out = what.substr(0, at) + " at line " + std::to_string(line) + ", column " +
                      std::to_string(offset - lineStart + 1);
    std::string excerpt = Snippet(grammar.substr(offset, 64), 40);
    out += excerpt.empty() ? " (the end of " + std::string(offset == grammar.size() ? "the grammar)" : "the line)")
                           : ": `" + excerpt + "`";
    return out;
  }
  if (what == "unexpected end of input") {
    return what + ": a string (\"...\") or a character class ([...]) is not closed";
  }
  return Snippet(what, 200);
}

// Widths (see sampling.h) of every rule of a parsed grammar, without recursion: a grammar's rule
// graph can be as deep as it has rules. Rules referenced in a first position form a DAG once
// left recursion is ruled out (llama.cpp refuses it); a cycle met anyway counts as width 1.
struct WidthResult {
  uint64_t width = 0;
  size_t rule = 0;
  size_t alternatives = 0;
  bool leftRecursive = false;  // a rule reached again through first positions
  size_t recursiveRule = 0;
};

WidthResult RuleWidths(const llama_grammar_rules& rules) {
  static constexpr uint64_t kSaturate = uint64_t(1) << 60;
  auto add = [](uint64_t a, uint64_t b) { return std::min(kSaturate, a + b); };
  const size_t n = rules.size();
  auto isTerminal = [](const llama_grammar_element& e) {
    return e.type == LLAMA_GRETYPE_CHAR || e.type == LLAMA_GRETYPE_CHAR_NOT || e.type == LLAMA_GRETYPE_CHAR_ANY ||
           e.type == LLAMA_GRETYPE_TOKEN || e.type == LLAMA_GRETYPE_TOKEN_NOT;
  };
  auto isEnd = [](const llama_grammar_element& e) {
    return e.type == LLAMA_GRETYPE_END || e.type == LLAMA_GRETYPE_ALT;
  };
  // The alternatives of every rule as [begin, end) element ranges.
  struct Alt {
    size_t rule, begin, end;
  };
  std::vector<Alt> alts;
  std::vector<std::vector<size_t>> altsOf(n);
  for (size_t r = 0; r < n; ++r) {
    const auto& rule = rules[r];
    size_t begin = 0;
    for (size_t k = 0; k < rule.size(); ++k) {
      if (!isEnd(rule[k])) continue;
      altsOf[r].push_back(alts.size());
      alts.push_back({r, begin, k});
      begin = k + 1;
      if (rule[k].type == LLAMA_GRETYPE_END) break;
    }
  }
  // Rules that derive the empty string: a worklist over the alternatives without terminals.
  std::vector<char> nullable(n, 0);
  std::vector<size_t> missing(alts.size(), 0);
  std::vector<std::vector<size_t>> usedIn(n);  // alternatives that reference a rule (per use)
  std::vector<size_t> work;
  for (size_t a = 0; a < alts.size(); ++a) {
    const auto& rule = rules[alts[a].rule];
    bool terminal = false;
    for (size_t k = alts[a].begin; k < alts[a].end; ++k) {
      if (isTerminal(rule[k])) terminal = true;
    }
    if (terminal) {
      missing[a] = SIZE_MAX;
      continue;
    }
    for (size_t k = alts[a].begin; k < alts[a].end; ++k) {
      if (rule[k].type == LLAMA_GRETYPE_RULE_REF && rule[k].value < n) {
        missing[a]++;
        usedIn[rule[k].value].push_back(a);
      }
    }
    if (missing[a] == 0 && !nullable[alts[a].rule]) {
      nullable[alts[a].rule] = 1;
      work.push_back(alts[a].rule);
    }
  }
  while (!work.empty()) {
    size_t r = work.back();
    work.pop_back();
    for (size_t a : usedIn[r]) {
      if (missing[a] == SIZE_MAX || missing[a] == 0) continue;
      if (--missing[a] == 0 && !nullable[alts[a].rule]) {
        nullable[alts[a].rule] = 1;
        work.push_back(alts[a].rule);
      }
    }
  }
  // The rules a rule's width depends on: those referenced at the start of an alternative or
  // after references to nullable rules.
  auto firstRefs = [&](size_t r, const std::function<void(size_t)>& visit) {
    const auto& rule = rules[r];
    for (size_t a : altsOf[r]) {
      for (size_t k = alts[a].begin; k < alts[a].end; ++k) {
        if (isTerminal(rule[k])) break;
        if (rule[k].type != LLAMA_GRETYPE_RULE_REF || rule[k].value >= n) continue;  // modifiers follow chars
        visit(rule[k].value);
        if (!nullable[rule[k].value]) break;
      }
    }
  };
  WidthResult out;
  std::vector<uint64_t> width(n, 0);
  std::vector<char> state(n, 0);  // 0 new, 1 on the stack, 2 done
  auto compute = [&](size_t r) {
    const auto& rule = rules[r];
    uint64_t w = 0;
    for (size_t a : altsOf[r]) {
      for (size_t k = alts[a].begin; k < alts[a].end; ++k) {
        if (isTerminal(rule[k])) {
          w = add(w, 1);
          break;
        }
        if (rule[k].type != LLAMA_GRETYPE_RULE_REF || rule[k].value >= n) continue;
        const size_t ref = rule[k].value;
        w = add(w, state[ref] == 2 ? width[ref] : 1);
        if (!nullable[ref]) break;
      }
    }
    width[r] = w;
  };
  for (size_t start = 0; start < n; ++start) {
    if (state[start] != 0) continue;
    std::vector<std::pair<size_t, bool>> stack{{start, false}};
    while (!stack.empty()) {
      auto [r, expanded] = stack.back();
      stack.pop_back();
      if (expanded) {
        compute(r);
        state[r] = 2;
        continue;
      }
      if (state[r] != 0) continue;
      state[r] = 1;
      stack.push_back({r, true});
      firstRefs(r, [&](size_t ref) {
        if (state[ref] == 0) {
          stack.push_back({ref, false});
        } else if (state[ref] == 1 && !out.leftRecursive) {
          // state 1 marks exactly the rules being expanded above this one: a cycle
          out.leftRecursive = true;
          out.recursiveRule = ref;
        }
      });
    }
  }
  out.alternatives = alts.size();
  for (size_t r = 0; r < n; ++r) {
    // A nullable rule also leaves the stack that continues after it.
    uint64_t w = add(width[r], nullable[r] ? 1 : 0);
    if (w > out.width) {
      out.width = w;
      out.rule = r;
    }
  }
  return out;
}

}  // namespace

uint64_t GrammarMaxWidth() {
  static const uint64_t limit = []() {
    const char* v = std::getenv("LMSERVE_GRAMMAR_MAX_WIDTH");
    if (v == nullptr || *v == '\0') return kDefaultGrammarMaxWidth;
    char* end = nullptr;
    unsigned long long n = std::strtoull(v, &end, 10);
    return end != nullptr && *end == '\0' ? static_cast<uint64_t>(n) : kDefaultGrammarMaxWidth;
  }();
  return limit;
}

GrammarReport AnalyzeGrammar(const llama_vocab* vocab, const std::string& grammar, const std::string& root,
                             bool keepGrammar) {
  GrammarReport report;
  report.maxWidth = GrammarMaxWidth();
  auto fail = [&](GrammarReport::Verdict verdict, std::string reason) {
    report.verdict = verdict;
    report.reason = std::move(reason);
    report.grammar.reset();
    return std::move(report);
  };

  // 1. Syntax: llama.cpp's parser, driven rule by rule as its parse() does, so that its
  //    exception (which parse() only prints to stderr) becomes the reason.
  llama_grammar_parser parser(vocab);
  try {
    const char* pos = SkipSpace(grammar.c_str(), true);
    while (*pos) pos = parser.parse_rule(pos);
  } catch (const std::exception& e) {
    return fail(GrammarReport::Verdict::Syntax, DescribeParseError(grammar, e.what()));
  }
  // Every symbol's name: rules referenced but never defined have ids beyond parser.rules.
  size_t nSymbols = parser.rules.size();
  for (const auto& entry : parser.symbol_ids) nSymbols = std::max<size_t>(nSymbols, entry.second + size_t(1));
  std::vector<std::string> names(nSymbols);
  for (const auto& [name, id] : parser.symbol_ids) names[id] = name;
  auto nameOf = [&](uint32_t id) { return id < names.size() && !names[id].empty() ? names[id] : "#" + std::to_string(id); };
  // parse()'s own check, naming the rule: every rule used is defined.
  for (size_t r = 0; r < parser.rules.size(); ++r) {
    for (const auto& e : parser.rules[r]) {
      if (e.type == LLAMA_GRETYPE_RULE_REF && (e.value >= parser.rules.size() || parser.rules[e.value].empty())) {
        return fail(GrammarReport::Verdict::Syntax, "rule " + Quote(nameOf(e.value)) + " is used but never defined");
      }
    }
    if (parser.rules[r].empty()) {
      return fail(GrammarReport::Verdict::Syntax, "rule " + Quote(nameOf(static_cast<uint32_t>(r))) + " is never defined");
    }
  }
  if (parser.rules.empty()) return fail(GrammarReport::Verdict::Syntax, "the grammar defines no rules");
  // Token references (<[id]>) are not checked by the parser: an id outside the vocabulary could
  // never match, and the grammar would allow no token there.
  const int32_t nVocab = vocab != nullptr ? llama_vocab_n_tokens(vocab) : 0;
  for (size_t r = 0; r < parser.rules.size(); ++r) {
    for (const auto& e : parser.rules[r]) {
      if ((e.type == LLAMA_GRETYPE_TOKEN || e.type == LLAMA_GRETYPE_TOKEN_NOT) && e.value >= static_cast<uint32_t>(nVocab)) {
        return fail(GrammarReport::Verdict::Syntax,
                    "rule " + Quote(nameOf(static_cast<uint32_t>(r))) + " refers to token " + std::to_string(e.value) +
                        ", outside the vocabulary (0.." + std::to_string(nVocab - 1) + ")");
      }
    }
  }
  auto rootIt = parser.symbol_ids.find(root);
  if (rootIt == parser.symbol_ids.end()) {
    return fail(GrammarReport::Verdict::Syntax,
                "the root rule " + Quote(root) + " is not defined (the grammar defines " +
                    Quote(nameOf(0)) + (parser.rules.size() > 1 ? " and others)" : ")"));
  }
  report.rules = parser.rules.size();

  // 2. llama.cpp's own verdict (left recursion, anything added since): the grammar it builds
  //    (what llama_sampler_init_grammar would hold).
  {
    LogCapture capture;
    GrammarPtr built(llama_grammar_init_impl(vocab, grammar.c_str(), root.c_str(), false, nullptr, 0, nullptr, 0));
    if (!built) {
      std::string log = capture.text();
      const std::string marker = "left recursion detected for nonterminal at index ";
      size_t m = log.find(marker);
      if (m != std::string::npos) {
        // llama.cpp names the rule its search started from; the cycle may be further on.
        uint32_t index = static_cast<uint32_t>(std::strtoul(log.c_str() + m + marker.size(), nullptr, 10));
        WidthResult w = RuleWidths(parser.rules);
        if (w.leftRecursive) index = static_cast<uint32_t>(w.recursiveRule);
        return fail(GrammarReport::Verdict::Unsupported,
                    "rule " + Quote(nameOf(index)) + " is left-recursive, which llama.cpp does not support");
      }
      std::string tail = capture.Tail(3);
      return fail(GrammarReport::Verdict::Unsupported, tail.empty() ? "llama.cpp refuses the grammar" : tail);
    }
    if (keepGrammar) report.grammar = std::move(built);
  }

  // 3. Width.
  WidthResult w = RuleWidths(parser.rules);
  report.alternatives = w.alternatives;
  report.width = w.width;
  report.widestRule = nameOf(static_cast<uint32_t>(w.rule));
  if (report.maxWidth > 0 && report.width > report.maxWidth) {
    return fail(GrammarReport::Verdict::TooComplex,
                "too complex: rule " + Quote(report.widestRule) + " can open " + std::to_string(report.width) +
                    " alternatives at one point; at most " + std::to_string(report.maxWidth) +
                    " are allowed (each one is checked against every token of the vocabulary)");
  }
  return report;
}

std::string CheckGrammar(const llama_vocab* vocab, const std::string& grammar, const std::string& root) {
  return AnalyzeGrammar(vocab, grammar, root).reason;
}

// ---------------------------------------------------------------------------------------------
// GrammarCache

size_t GrammarCacheCapacity() {
  static const size_t capacity = []() {
    const char* v = std::getenv("LMSERVE_GRAMMAR_CACHE_SIZE");
    if (v == nullptr || *v == '\0') return kDefaultGrammarCacheCapacity;
    char* end = nullptr;
    unsigned long long n = std::strtoull(v, &end, 10);
    return end != nullptr && *end == '\0' ? static_cast<size_t>(n) : kDefaultGrammarCacheCapacity;
  }();
  return capacity;
}

std::shared_ptr<GrammarProgram> GrammarCache::Acquire(const llama_vocab* vocab, const std::string& grammar,
                                                     const std::string& root) {
  std::string key;
  key.reserve(grammar.size() + 1 + root.size());
  key.append(grammar).push_back('\0');
  key.append(root);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(std::string_view(key));
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      hits_++;
      return it->second->program;
    }
  }

  // Miss: the full analysis, outside the lock (two threads missing the same grammar at once
  // both parse it; the second insert finds the first's entry and uses it).
  misses_++;
  GrammarReport report = AnalyzeGrammar(vocab, grammar, root, true);
  if (report.verdict != GrammarReport::Verdict::Valid || !report.grammar) {
    throw CodedError(codes::kInvalidGrammar, "params.grammar is not valid: " + report.reason, "params.grammar");
  }
  auto program = std::make_shared<GrammarProgram>(vocab, std::move(report.grammar));
  if (capacity_ == 0) return program;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(std::string_view(key));
  if (it != index_.end()) return it->second->program;
  lru_.push_front(Entry{std::move(key), program});
  index_.emplace(std::string_view(lru_.front().key), lru_.begin());
  while (lru_.size() > capacity_) {
    index_.erase(std::string_view(lru_.back().key));
    lru_.pop_back();
  }
  return program;
}

void GrammarCache::Clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  index_.clear();
  lru_.clear();
}

size_t GrammarCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return lru_.size();
}

// ---------------------------------------------------------------------------------------------
// GrammarProgram

void GrammarDeleter::operator()(llama_grammar* g) const { llama_grammar_free_impl(g); }

RuleTable BuildRuleTable(const llama_grammar& grammar) {
  RuleTable table;
  table.reserve(grammar.rules.size());
  for (size_t r = 0; r < grammar.rules.size(); ++r) {
    const auto& rule = grammar.rules[r];
    if (rule.empty()) continue;
    table.push_back(RuleSpan{rule.data(), rule.data() + rule.size(), static_cast<uint32_t>(r)});
  }
  std::sort(table.begin(), table.end(), [](const RuleSpan& a, const RuleSpan& b) { return std::less<>()(a.begin, b.begin); });
  return table;
}

namespace {
// (rule, element) of a stack position, or false when it lies in none of the table's rules.
bool Locate(const RuleTable& table, const llama_grammar_element* p, uint32_t* rule, uint32_t* element) {
  auto it = std::upper_bound(table.begin(), table.end(), p,
                             [](const llama_grammar_element* q, const RuleSpan& s) { return std::less<>()(q, s.begin); });
  if (it == table.begin()) return false;
  --it;
  if (!std::less<>()(p, it->end)) return false;
  *rule = it->rule;
  *element = static_cast<uint32_t>(p - it->begin);
  return true;
}
}  // namespace

GrammarProgram::GrammarProgram(const llama_vocab* vocab, GrammarPtr prototype)
    : nVocab_(vocab != nullptr ? llama_vocab_n_tokens(vocab) : 0), prototype_(std::move(prototype)) {
  table_ = BuildRuleTable(*prototype_);
}

GrammarPtr GrammarProgram::Instantiate() const {
  const llama_grammar& p = *prototype_;
  GrammarPtr g(new llama_grammar{p.vocab, p.rules, p.stacks, p.partial_utf8, p.lazy, p.awaiting_trigger,
                                 p.trigger_buffer, p.trigger_buffer_positions, p.trigger_tokens,
                                 p.trigger_patterns});
  for (auto& stack : g->stacks) {
    for (auto& position : stack) {
      uint32_t rule = 0, element = 0;
      if (!Locate(table_, position, &rule, &element)) {
        throw CodedError(codes::kInternal, "a grammar stack points outside its rules");
      }
      position = &g->rules[rule][element];
    }
  }
  return g;
}

std::string GrammarProgram::StateKey(const llama_grammar& grammar, const RuleTable& table) {
  size_t positions = 0;
  for (const auto& stack : grammar.stacks) positions += stack.size() + 1;
  if (positions > kGrammarStateMaxElements) return std::string();
  std::string key;
  key.reserve(8 + positions * 8);
  auto put = [&key](uint32_t v) { key.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(grammar.partial_utf8.value);
  put(static_cast<uint32_t>(grammar.partial_utf8.n_remain));
  for (const auto& stack : grammar.stacks) {
    put(static_cast<uint32_t>(stack.size()));
    for (const llama_grammar_element* position : stack) {
      uint32_t rule = 0, element = 0;
      if (!Locate(table, position, &rule, &element)) return std::string();
      put(rule);
      put(element);
    }
  }
  return key;
}

std::shared_ptr<const GrammarStateSet> GrammarProgram::Find(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = states_.find(key);
  return it == states_.end() ? nullptr : it->second;
}

std::shared_ptr<const GrammarStateSet> GrammarProgram::Compute(const llama_grammar& grammar) const {
  std::vector<llama_token_data> all(static_cast<size_t>(nVocab_));
  for (llama_token id = 0; id < nVocab_; ++id) all[static_cast<size_t>(id)] = llama_token_data{id, 0.0f, 0.0f};
  llama_token_data_array cur{all.data(), all.size(), -1, false};
  llama_grammar_apply_impl(grammar, &cur);
  size_t allowed = 0;
  for (const auto& d : all) allowed += d.logit != -std::numeric_limits<float>::infinity() ? 1 : 0;
  auto set = std::make_shared<GrammarStateSet>();
  set->rejected = allowed * 2 > all.size();
  set->tokens.reserve(set->rejected ? all.size() - allowed : allowed);
  for (const auto& d : all) {
    const bool isAllowed = d.logit != -std::numeric_limits<float>::infinity();
    if (isAllowed != set->rejected) set->tokens.push_back(d.id);
  }
  return set;
}

void GrammarProgram::Store(const std::string& key, std::shared_ptr<const GrammarStateSet> set) {
  if (key.empty() || set->tokens.size() > kGrammarStateTokenBudget) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (states_.count(key) != 0) return;
  if (storedTokens_ + set->tokens.size() > kGrammarStateTokenBudget) {
    states_.clear();
    storedTokens_ = 0;
  }
  storedTokens_ += set->tokens.size();
  states_.emplace(key, std::move(set));
}

bool GrammarStatesEnabled() {
  static const bool enabled = []() {
    const char* v = std::getenv("LMSERVE_GRAMMAR_STATES");
    return v == nullptr || (std::strcmp(v, "off") != 0 && std::strcmp(v, "0") != 0);
  }();
  return enabled;
}

// ---------------------------------------------------------------------------------------------
// SequenceSampler

SequenceSampler::SequenceSampler(SamplerPtr chain, std::vector<llama_logit_bias> biases,
                                 std::shared_ptr<GrammarProgram> program, int32_t nVocab, int32_t candidateLimit,
                                 int32_t penaltyLastN)
    : chain_(std::move(chain)),
      program_(std::move(program)),
      nVocab_(nVocab),
      candidateLimit_(candidateLimit),
      penaltyLastN_(std::max(0, penaltyLastN)) {
  std::sort(biases.begin(), biases.end(), [](const llama_logit_bias& a, const llama_logit_bias& b) { return a.token < b.token; });
  for (const auto& b : biases) {
    if (b.token < 0 || b.token >= nVocab_) continue;
    if (!biases_.empty() && biases_.back().token == b.token) {
      biases_.back().bias += b.bias;
    } else {
      biases_.push_back(b);
    }
  }
  if (program_) {
    grammar_ = program_->Instantiate();
    table_ = BuildRuleTable(*grammar_);
    candidateLimit_ = 0;  // the grammar's resample reads every logit
  }
  if (candidateLimit_ > 0) {
    for (const auto& b : biases_) biasedIds_.push_back(b.token);
  } else {
    cur_.resize(static_cast<size_t>(nVocab_));
  }
}

void BestLogits(const float* logits, int32_t n, int32_t k, const std::vector<llama_token>& skip,
                std::vector<llama_token_data>* out) {
  out->clear();
  if (k <= 0) return;
  // A min-heap on the logit: front() is the k-th best so far.
  const auto heapOrder = [](const llama_token_data& a, const llama_token_data& b) { return a.logit > b.logit; };
  const auto skipped = [&](llama_token id) { return !skip.empty() && std::binary_search(skip.begin(), skip.end(), id); };
  int32_t i = 0;
  for (; i < n && static_cast<int32_t>(out->size()) < k; ++i) {
    if (!skipped(i)) out->push_back(llama_token_data{i, logits[i], 0.0f});
  }
  if (out->empty()) return;
  std::make_heap(out->begin(), out->end(), heapOrder);
  float threshold = out->front().logit;
  const auto consider = [&](int32_t id) {
    const float v = logits[id];
    if (!(v > threshold) || skipped(id)) return;
    std::pop_heap(out->begin(), out->end(), heapOrder);
    out->back() = llama_token_data{id, v, 0.0f};
    std::push_heap(out->begin(), out->end(), heapOrder);
    threshold = out->front().logit;
  };
  if (static_cast<int32_t>(out->size()) < k) return;  // fewer than k ids at all
#if defined(__SSE2__)
  for (; i < n && (i & 15) != 0; ++i) consider(i);
  for (; i + 16 <= n; i += 16) {
    const __m128 t = _mm_set1_ps(threshold);
    const __m128 a = _mm_cmpgt_ps(_mm_loadu_ps(logits + i), t);
    const __m128 b = _mm_cmpgt_ps(_mm_loadu_ps(logits + i + 4), t);
    const __m128 c = _mm_cmpgt_ps(_mm_loadu_ps(logits + i + 8), t);
    const __m128 d = _mm_cmpgt_ps(_mm_loadu_ps(logits + i + 12), t);
    if (_mm_movemask_ps(_mm_or_ps(_mm_or_ps(a, b), _mm_or_ps(c, d))) == 0) continue;
    for (int32_t j = i; j < i + 16; ++j) consider(j);
  }
#elif defined(__ARM_NEON)
  for (; i < n && (i & 15) != 0; ++i) consider(i);
  for (; i + 16 <= n; i += 16) {
    const float32x4_t t = vdupq_n_f32(threshold);
    const uint32x4_t a = vorrq_u32(vcgtq_f32(vld1q_f32(logits + i), t), vcgtq_f32(vld1q_f32(logits + i + 4), t));
    const uint32x4_t b = vorrq_u32(vcgtq_f32(vld1q_f32(logits + i + 8), t), vcgtq_f32(vld1q_f32(logits + i + 12), t));
    if (vmaxvq_u32(vorrq_u32(a, b)) == 0) continue;
    for (int32_t j = i; j < i + 16; ++j) consider(j);
  }
#endif
  for (; i < n; ++i) consider(i);
}

llama_token_data_array SequenceSampler::FillBest(const float* logits) {
  if (recentIds_.empty()) {
    BestLogits(logits, nVocab_, candidateLimit_, biasedIds_, &cur_);
  } else {
    skip_.clear();
    std::set_union(biasedIds_.begin(), biasedIds_.end(), recentIds_.begin(), recentIds_.end(), std::back_inserter(skip_));
    BestLogits(logits, nVocab_, candidateLimit_, skip_, &cur_);
  }
  // A banned token (bias -inf) stays at -inf whatever the penalties do: with k finite logits
  // beside it, the chain's top-k (or greedy) never keeps it, so it need not be a candidate.
  const bool kFinite = static_cast<int32_t>(cur_.size()) == candidateLimit_ &&
                       std::all_of(cur_.begin(), cur_.end(), [](const llama_token_data& t) { return std::isfinite(t.logit); });
  for (const auto& b : biases_) {
    if (kFinite && b.bias == -std::numeric_limits<float>::infinity()) continue;
    cur_.push_back(llama_token_data{b.token, logits[b.token] + b.bias, 0.0f});
  }
  for (llama_token id : recentIds_) {
    if (!std::binary_search(biasedIds_.begin(), biasedIds_.end(), id)) cur_.push_back(llama_token_data{id, logits[id], 0.0f});
  }
  // Ascending ids, as in Fill: where logits are equal, the chain then picks as it would there.
  std::sort(cur_.begin(), cur_.end(), [](const llama_token_data& a, const llama_token_data& b) { return a.id < b.id; });
  return llama_token_data_array{cur_.data(), cur_.size(), -1, false};
}

llama_token_data_array SequenceSampler::Fill(const float* logits) {
  cur_.resize(static_cast<size_t>(nVocab_));
  for (llama_token id = 0; id < nVocab_; ++id) cur_[static_cast<size_t>(id)] = llama_token_data{id, logits[id], 0.0f};
  for (const auto& b : biases_) cur_[static_cast<size_t>(b.token)].logit += b.bias;
  return llama_token_data_array{cur_.data(), cur_.size(), -1, false};
}

llama_token SequenceSampler::Choose(llama_token_data_array* cur) {
  if (cur->size > 0) llama_sampler_apply(chain_.get(), cur);
  if (cur->size == 0 || cur->selected < 0 || cur->selected >= static_cast<int64_t>(cur->size) ||
      cur->data[cur->selected].logit == -std::numeric_limits<float>::infinity()) {
    throw CodedError(codes::kInvalidGrammar,
                     "params.grammar allows no token here that params.logitBias does not ban", "params.grammar");
  }
  return cur->data[cur->selected].id;
}

bool SequenceSampler::SampleFast(const float* logits, llama_token* token) {
  llama_token_data_array cur = candidateLimit_ > 0 ? FillBest(logits) : Fill(logits);
  llama_sampler_apply(chain_.get(), &cur);
  if (cur.selected < 0 || cur.selected >= static_cast<int64_t>(cur.size)) {
    throw CodedError(codes::kInternal, "the sampler chain selected no token");
  }
  const llama_token id = cur.data[cur.selected].id;
  if (!grammar_) {
    *token = id;
    return true;
  }
  // Does the grammar accept the chain's choice? (common_sampler_sample, grammar_first = false)
  llama_token_data single{id, 1.0f, 0.0f};
  llama_token_data_array one{&single, 1, -1, false};
  llama_grammar_apply_impl(*grammar_, &one);
  if (one.data[0].logit == -std::numeric_limits<float>::infinity()) return false;
  *token = id;
  return true;
}

// The chain over the candidates the grammar allows: what llama.cpp's resample gives (the grammar
// sets the others to -inf, which the chain never selects), without the grammar pass.
llama_token SequenceSampler::SampleFrom(const GrammarStateSet& set, const float* logits) {
  if (set.rejected) {
    llama_token_data_array cur = Fill(logits);
    for (llama_token id : set.tokens) cur_[static_cast<size_t>(id)].logit = -std::numeric_limits<float>::infinity();
    return Choose(&cur);
  }
  cur_.clear();
  auto bias = biases_.begin();  // both ascending by token: a merge
  for (llama_token id : set.tokens) {
    float logit = logits[id];
    while (bias != biases_.end() && bias->token < id) ++bias;
    if (bias != biases_.end() && bias->token == id) logit += bias->bias;
    cur_.push_back(llama_token_data{id, logit, 0.0f});
  }
  llama_token_data_array cur{cur_.data(), cur_.size(), -1, false};
  return Choose(&cur);
}

bool SequenceSampler::SampleKnown(const float* logits, llama_token* token) {
  if (!grammar_ || !GrammarStatesEnabled()) return false;
  const std::string key = GrammarProgram::StateKey(*grammar_, table_);
  if (key.empty()) return false;
  std::shared_ptr<const GrammarStateSet> set = program_->Find(key);
  if (!set) return false;
  *token = SampleFrom(*set, logits);
  return true;
}

llama_token SequenceSampler::SampleFull(const float* logits) {
  if (!grammar_ || !GrammarStatesEnabled()) {
    // llama.cpp's own resample: the grammar over every candidate, then the chain.
    llama_token_data_array cur = Fill(logits);
    if (grammar_) llama_grammar_apply_impl(*grammar_, &cur);
    return Choose(&cur);
  }
  const std::string key = GrammarProgram::StateKey(*grammar_, table_);
  std::shared_ptr<const GrammarStateSet> set = key.empty() ? nullptr : program_->Find(key);
  if (!set) {
    set = program_->Compute(*grammar_);
    program_->Store(key, set);
  }
  return SampleFrom(*set, logits);
}

void SequenceSampler::Accept(llama_token token) {
  if (grammar_) {
    try {
      llama_grammar_accept_impl(*grammar_, token);
    } catch (const std::exception& e) {
      throw CodedError(codes::kInvalidGrammar, std::string("params.grammar cannot continue: ") + e.what(),
                       "params.grammar");
    }
  }
  llama_sampler_accept(chain_.get(), token);
  if (candidateLimit_ > 0 && penaltyLastN_ > 0) {
    // llama_sampler_penalties_accept's window: the token counted, the oldest out when full.
    if (recentCount_[token]++ == 0) recentIds_.insert(std::lower_bound(recentIds_.begin(), recentIds_.end(), token), token);
    if (recent_.size() >= static_cast<size_t>(penaltyLastN_)) {
      const llama_token old = recent_.front();
      recent_.pop_front();
      if (--recentCount_[old] == 0) {
        recentCount_.erase(old);
        recentIds_.erase(std::lower_bound(recentIds_.begin(), recentIds_.end(), old));
      }
    }
    recent_.push_back(token);
  }
}

const float* SequenceSampler::KeepLogits(const float* logits) {
  kept_.assign(logits, logits + nVocab_);
  return kept_.data();
}

std::unique_ptr<SequenceSampler> BuildSampler(const llama_model* model, const GenerationParams& p,
                                              GrammarCache* grammars, bool bestLogitsOnly) {
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int32_t nVocab = llama_vocab_n_tokens(vocab);
  std::shared_ptr<GrammarProgram> program;
  if (!p.grammar.empty() && grammars != nullptr) {
    program = grammars->Acquire(vocab, p.grammar, p.grammarRoot);
  } else if (!p.grammar.empty()) {
    GrammarReport report = AnalyzeGrammar(vocab, p.grammar, p.grammarRoot, true);
    if (report.verdict != GrammarReport::Verdict::Valid) {
      throw CodedError(codes::kInvalidGrammar, "params.grammar is not valid: " + report.reason, "params.grammar");
    }
    program = std::make_shared<GrammarProgram>(vocab, std::move(report.grammar));
  }

  llama_sampler_chain_params cp = llama_sampler_chain_default_params();
  cp.no_perf = true;
  SamplerPtr chain(llama_sampler_chain_init(cp));
  std::vector<llama_logit_bias> biases;
  for (const auto& [id, bias] : p.logitBias) biases.push_back({id, bias});
  if (p.ignoreEos && p.grammar.empty()) {
    // As llama-server does: end-of-generation tokens can never be sampled. (With a grammar, the
    // grammar decides where the output may end.)
    for (llama_token id = 0; id < nVocab; ++id) {
      if (llama_vocab_is_eog(vocab, id)) biases.push_back({id, -std::numeric_limits<float>::infinity()});
    }
  }
  const bool penalties = p.repeatPenalty != 1.0f || p.presencePenalty != 0.0f || p.frequencyPenalty != 0.0f;
  // The chain keeps the top k (greedy: 1) after the penalties, which change only the tokens of
  // their window; llama.cpp's top-k sorts partially up to 128 and buckets beyond, so larger k
  // gain little here.
  int32_t candidateLimit = 0;
  if (bestLogitsOnly) {
    if (p.temperature <= 0.0f) candidateLimit = 1;
    else if (p.topK > 0 && p.topK <= 128) candidateLimit = p.topK;
  }
  if (penalties) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_penalties(nVocab, p.repeatLastN, p.repeatPenalty,
                                                                      p.frequencyPenalty, p.presencePenalty));
  }
  if (p.temperature <= 0.0f) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_greedy());
  } else {
    if (p.topK > 0) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_k(p.topK));
    if (p.topP < 1.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_p(p.topP, 1));
    if (p.minP > 0.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_min_p(p.minP, 1));
    llama_sampler_chain_add(chain.get(), llama_sampler_init_temp(p.temperature));
    llama_sampler_chain_add(chain.get(), llama_sampler_init_dist(p.seed));
  }
  return std::make_unique<SequenceSampler>(std::move(chain), std::move(biases), std::move(program), nVocab,
                                           candidateLimit, penalties ? p.repeatLastN : 0);
}

}  // namespace lmserve
