// Per-request generation parameters, their one table of names, types, bounds and defaults, and
// the llama.cpp sampler chain built from them.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "llama.h"

namespace lmserve {

struct SamplerDeleter {
  void operator()(llama_sampler* s) const { llama_sampler_free(s); }
};
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerDeleter>;

// The defaults here are the defaults of the API: paramSpecs() reports them from this struct.
struct GenerationParams {
  int32_t maxTokens = -1;  // -1: until the sequence's context is full
  float temperature = 0.8f;
  int32_t topK = 40;
  float topP = 0.95f;
  float minP = 0.05f;
  float repeatPenalty = 1.0f;
  int32_t repeatLastN = 64;
  float presencePenalty = 0.0f;
  float frequencyPenalty = 0.0f;
  uint32_t seed = LLAMA_DEFAULT_SEED;  // LLAMA_DEFAULT_SEED (0xFFFFFFFF): a random seed per request
  bool ignoreEos = false;
  std::vector<std::pair<llama_token, float>> logitBias;
  std::vector<std::string> stop;
  std::string grammar;
  std::string grammarRoot = "root";
  // Log-probabilities to report with each generated token: -1 none, 0 the chosen token's, N also
  // the N most likely tokens' (at most kMaxTopLogprobs).
  int32_t logprobs = -1;
};

constexpr int32_t kMaxTopLogprobs = 20;

// A generated token's log-probability and the most likely alternatives at its position, from the
// raw logits (log-softmax over the whole vocabulary, before any sampler), as llama-server
// reports `probs`. Alternatives most likely first.
struct TokenLogprob {
  llama_token token = -1;
  float logprob = 0;
  std::vector<std::pair<llama_token, float>> top;
};

// O(n_vocab) plus a partial sort of `top` entries; only for requests that ask for it.
TokenLogprob ComputeLogprob(const float* logits, int32_t nVocab, llama_token token, int32_t top);

enum class ParamType { Int, Float, Bool, String, StringList, LogitBias };
const char* ParamTypeName(ParamType type);

// One generation parameter. ParseGenerationParams reads every parameter through this table,
// and the addon exports it (paramSpecs()), so the bounds other layers check (the HTTP edge,
// the docs) cannot drift from the ones enforced here.
struct ParamSpec {
  const char* name;  // as in JS (camelCase)
  ParamType type;
  // Int/Float: inclusive bounds. StringList: the most entries (`min` unused).
  double min = 0;
  double max = 0;
  // Int/Float/Bool: reads/writes the GenerationParams field as a double (Bool: 0 or 1).
  double (*get)(const GenerationParams&) = nullptr;
  void (*set)(GenerationParams&, double) = nullptr;
  // String / StringList: the field.
  std::string GenerationParams::*text = nullptr;
  std::vector<std::string> GenerationParams::*list = nullptr;
};

const std::vector<ParamSpec>& GenerationParamSpecs();

// paramSpecs() -> [{name, type, min?, max?, default?}]
Napi::Value ParamSpecsJs(const Napi::CallbackInfo& info);

// Reads and validates params from JS; throws a JS error with code INVALID_REQUEST naming the field.
GenerationParams ParseGenerationParams(Napi::Env env, Napi::Value value, int32_t nVocab);

// ---------------------------------------------------------------------------------------------
// Grammars.
//
// A grammar's cost per sampled token grows with the number of parser stacks it keeps open: the
// full check runs every candidate token of the vocabulary against every stack. The width of a
// rule is how many stacks expanding it can open at one point: its alternatives, with a rule
// referenced at the start of an alternative (or after rules that may be empty) counted as its
// own alternatives, recursively. `root ::= "a" | "b" | ... ` with 20,000 words has width 20,000
// and made every token sampled under it cost 0.5-1 s on a 32k vocabulary; a JSON grammar from
// json_schema_to_grammar has a width of a few dozen. A grammar wider than the limit anywhere
// (kDefaultGrammarMaxWidth, or LMSERVE_GRAMMAR_MAX_WIDTH; 0 lifts it) is refused with
// INVALID_GRAMMAR before it reaches a sampler.
constexpr uint64_t kDefaultGrammarMaxWidth = 1024;
uint64_t GrammarMaxWidth();

struct GrammarReport {
  enum class Verdict { Valid, Syntax, Unsupported, TooComplex };
  Verdict verdict = Verdict::Valid;
  std::string reason;    // empty when valid: what is wrong, e.g. "expecting name at line 2, column 9: `| x`"
  size_t rules = 0;      // after parsing (repetitions and groups become rules of their own)
  size_t alternatives = 0;
  uint64_t width = 0;    // see above; of the widest rule
  std::string widestRule;
  uint64_t maxWidth = 0;  // the limit in force (0: none)
  SamplerPtr sampler;     // with keepSampler: llama.cpp's grammar sampler, when valid
};

// Parses a GBNF grammar with llama.cpp's own parser, reporting why it does not parse (the
// parser only prints that to stderr, so the parse is driven here and its exception caught),
// a missing root rule by name, left recursion by rule name, and a width above the limit.
// Thread-safe; nothing is printed.
GrammarReport AnalyzeGrammar(const llama_vocab* vocab, const std::string& grammar, const std::string& root,
                             bool keepSampler = false);

// Parses a GBNF grammar; returns an empty string when it is valid, else the reason.
std::string CheckGrammar(const llama_vocab* vocab, const std::string& grammar, const std::string& root);

// ---------------------------------------------------------------------------------------------
// Parsed grammars, cached per model (ModelHandle) by content.
//
// A miss runs AnalyzeGrammar (the parse, llama.cpp's own check and the width cap) and, for a
// valid grammar only, keeps its sampler as a prototype that never samples; every request (the
// first one too) gets llama_sampler_clone(prototype): llama.cpp's grammar clone deep-copies the
// parsed rules and the initial stacks (redirected to the copied rules), so the clone shares no
// state with the prototype or with other clones. A hot grammar costs a clone per request
// instead of a parse. Keyed by (grammar, root) compared in full (the hash only picks the
// bucket); least recently used entries go beyond the capacity (kDefaultGrammarCacheCapacity, or
// LMSERVE_GRAMMAR_CACHE_SIZE; 0 disables the cache). Thread-safe: every engine and thread of
// the process that holds the model shares it; the prototypes are freed with the model.
constexpr size_t kDefaultGrammarCacheCapacity = 64;
size_t GrammarCacheCapacity();

class GrammarCache {
 public:
  explicit GrammarCache(size_t capacity = GrammarCacheCapacity()) : capacity_(capacity) {}
  GrammarCache(const GrammarCache&) = delete;
  GrammarCache& operator=(const GrammarCache&) = delete;

  // The request's own grammar sampler. Throws CodedError(INVALID_GRAMMAR) naming params.grammar
  // with the reason (AnalyzeGrammar); an invalid grammar is not cached (each try is a miss).
  SamplerPtr Acquire(const llama_vocab* vocab, const std::string& grammar, const std::string& root);
  void Clear();

  uint64_t hits() const { return hits_.load(); }
  uint64_t misses() const { return misses_.load(); }
  size_t size() const;
  size_t capacity() const { return capacity_; }

 private:
  struct Entry {
    std::string key;  // grammar, '\0', root
    std::shared_ptr<llama_sampler> prototype;
  };
  using List = std::list<Entry>;

  const size_t capacity_;
  mutable std::mutex mutex_;
  List lru_;  // most recently used first
  std::unordered_map<std::string_view, List::iterator> index_;  // views into the entries' keys
  std::atomic<uint64_t> hits_{0}, misses_{0};
};

// ---------------------------------------------------------------------------------------------
// One sequence's sampler: the chain (logit bias incl. the EOG ban for ignoreEos, penalties,
// top-k, top-p, min-p, temperature, dist/greedy) and, apart from it, the grammar.
//
// As llama.cpp's common sampler (common_sampler_sample with grammar_first = false): the chain
// samples from all candidates first, and the grammar checks only the token it chose; only when
// the grammar rejects it are the candidates reset from the logits, the grammar applied to all of
// them, then the chain, and a token sampled again. A grammar that the model mostly follows costs
// one single-candidate check per token instead of a pass over the whole vocabulary.
//
// Not thread-safe: one thread at a time (the engine hands a sequence's full sampling to its
// sampling thread and does not touch the sampler until the result is back).
class SequenceSampler {
 public:
  SequenceSampler(SamplerPtr chain, SamplerPtr grammar, int32_t nVocab);

  bool constrained() const { return grammar_ != nullptr; }
  // The chain's choice from `logits` (n_vocab floats) when the grammar accepts it (or there is
  // no grammar): true and *token. False when the grammar rejects it: call SampleFull with the
  // same logits. Accepts nothing.
  bool SampleFast(const float* logits, llama_token* token);
  // Grammar over every candidate, then the chain. Throws CodedError(INVALID_GRAMMAR) when the
  // grammar (with the logit bias) leaves no token. Accepts nothing.
  llama_token SampleFull(const float* logits);
  // Advances the grammar and the chain (the penalties' history) past `token`. Throws
  // CodedError(INVALID_GRAMMAR) when the grammar cannot take it.
  void Accept(llama_token token);
  // Copies one row of logits, for a SampleFull after the context has decoded again.
  const float* KeepLogits(const float* logits);
  const float* keptLogits() const { return kept_.data(); }

 private:
  llama_token_data_array Fill(const float* logits);

  SamplerPtr chain_;
  SamplerPtr grammar_;
  int32_t nVocab_;
  std::vector<llama_token_data> cur_;
  std::vector<float> kept_;
};

// Builds a sequence's sampler; throws CodedError(INVALID_GRAMMAR) naming params.grammar with the
// reason (AnalyzeGrammar). The grammar sampler comes from `grammars` (the model's cache) when
// given, else from a parse of its own.
std::unique_ptr<SequenceSampler> BuildSampler(const llama_model* model, const GenerationParams& params,
                                              GrammarCache* grammars = nullptr);

}  // namespace lmserve
