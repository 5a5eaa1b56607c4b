// Per-request generation parameters, their one table of names, types, bounds and defaults, and
// the llama.cpp sampler chain built from them.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "llama.h"

struct llama_grammar;
struct llama_grammar_element;

namespace lmserve {

struct SamplerDeleter {
  void operator()(llama_sampler* s) const { llama_sampler_free(s); }
};
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerDeleter>;

// llama.cpp's grammar state (src/llama-grammar.h): the parsed rules, the stacks of the positions
// the output may be at, and a pending partial UTF-8 character.
struct GrammarDeleter {
  void operator()(llama_grammar* g) const;
};
using GrammarPtr = std::unique_ptr<llama_grammar, GrammarDeleter>;

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
  GrammarPtr grammar;     // with keepGrammar: llama.cpp's grammar at its start, when valid
};

// Parses a GBNF grammar with llama.cpp's own parser, reporting why it does not parse (the
// parser only prints that to stderr, so the parse is driven here and its exception caught),
// a missing root rule by name, left recursion by rule name, and a width above the limit.
// Thread-safe; nothing is printed.
GrammarReport AnalyzeGrammar(const llama_vocab* vocab, const std::string& grammar, const std::string& root,
                             bool keepGrammar = false);

// Parses a GBNF grammar; returns an empty string when it is valid, else the reason.
std::string CheckGrammar(const llama_vocab* vocab, const std::string& grammar, const std::string& root);

// ---------------------------------------------------------------------------------------------
// A parsed grammar, shared by every request that uses it: its prototype (never advanced) and
// the tokens it allows in each state that a request has met so far.
//
// What llama.cpp's grammar allows next depends only on its state: the stacks (positions in the
// rules) and the partial UTF-8 character. Sequences under one grammar meet the same states over
// and over (the start, "after a value", "inside a string"), so the pass over the whole
// vocabulary that finds the allowed tokens is done once per state and kept: a resample in a
// known state costs the chain over the allowed tokens, not the grammar over every token. The
// set is kept as the allowed or the rejected tokens, whichever is shorter, at most
// kGrammarStateTokenBudget tokens per grammar (past that the states are dropped and found
// again). A state whose stacks hold over kGrammarStateMaxElements positions is not kept.
// LMSERVE_GRAMMAR_STATES=off turns it off (every resample is llama.cpp's full pass).
constexpr size_t kGrammarStateTokenBudget = 1 << 19;
constexpr size_t kGrammarStateMaxElements = 4096;

// Where each rule of one grammar object's rules lies in memory, to name a stack position by
// (rule, element) indices.
struct RuleSpan {
  const llama_grammar_element* begin;
  const llama_grammar_element* end;
  uint32_t rule;
};
using RuleTable = std::vector<RuleSpan>;  // ordered by address
RuleTable BuildRuleTable(const llama_grammar& grammar);

bool GrammarStatesEnabled();

struct GrammarStateSet {
  bool rejected = false;          // `tokens` are the rejected ones (every other token is allowed)
  std::vector<llama_token> tokens;  // ascending
};

class GrammarProgram {
 public:
  GrammarProgram(const llama_vocab* vocab, GrammarPtr prototype);
  GrammarProgram(const GrammarProgram&) = delete;
  GrammarProgram& operator=(const GrammarProgram&) = delete;

  // A grammar of the request's own at the start: the rules copied, the stacks redirected to the
  // copy (as llama_grammar_clone_impl, in O(positions × log rules) instead of its quadratic scan).
  GrammarPtr Instantiate() const;
  // The state of `grammar` (an instance of this program) as a key: rule and element indices, so
  // that instances share it. Empty when the state is too large to keep.
  static std::string StateKey(const llama_grammar& grammar, const RuleTable& table);
  std::shared_ptr<const GrammarStateSet> Find(const std::string& key) const;
  // The allowed tokens of `grammar`'s state: llama.cpp's grammar over the whole vocabulary.
  std::shared_ptr<const GrammarStateSet> Compute(const llama_grammar& grammar) const;
  void Store(const std::string& key, std::shared_ptr<const GrammarStateSet> set);


 private:
  int32_t nVocab_;
  GrammarPtr prototype_;
  RuleTable table_;  // the prototype's
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<const GrammarStateSet>> states_;
  size_t storedTokens_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Parsed grammars, cached per model (ModelHandle) by content.
//
// A miss runs AnalyzeGrammar (the parse, llama.cpp's own check and the width cap) and, for a
// valid grammar only, keeps it as a GrammarProgram; every request (the first one too) gets its
// own instance of the program, sharing no state with the prototype or with other requests. A
// hot grammar costs an instance per request instead of a parse, and its known states cost no
// pass over the vocabulary. Keyed by (grammar, root) compared in full (the hash only picks the
// bucket); least recently used entries go beyond the capacity (kDefaultGrammarCacheCapacity, or
// LMSERVE_GRAMMAR_CACHE_SIZE; 0 disables the cache). Thread-safe: every engine and thread of
// the process that holds the model shares it; the programs are freed with the model (or with
// the last request that uses an evicted one).
constexpr size_t kDefaultGrammarCacheCapacity = 64;
size_t GrammarCacheCapacity();

class GrammarCache {
 public:
  explicit GrammarCache(size_t capacity = GrammarCacheCapacity()) : capacity_(capacity) {}
  GrammarCache(const GrammarCache&) = delete;
  GrammarCache& operator=(const GrammarCache&) = delete;

  // The parsed grammar. Throws CodedError(INVALID_GRAMMAR) naming params.grammar with the
  // reason (AnalyzeGrammar); an invalid grammar is not cached (each try is a miss).
  std::shared_ptr<GrammarProgram> Acquire(const llama_vocab* vocab, const std::string& grammar,
                                          const std::string& root);
  void Clear();

  uint64_t hits() const { return hits_.load(); }
  uint64_t misses() const { return misses_.load(); }
  size_t size() const;
  size_t capacity() const { return capacity_; }

 private:
  struct Entry {
    std::string key;  // grammar, '\0', root
    std::shared_ptr<GrammarProgram> program;
  };
  using List = std::list<Entry>;

  const size_t capacity_;
  mutable std::mutex mutex_;
  List lru_;  // most recently used first
  std::unordered_map<std::string_view, List::iterator> index_;  // views into the entries' keys
  std::atomic<uint64_t> hits_{0}, misses_{0};
};

// ---------------------------------------------------------------------------------------------
// One sequence's sampler: the logit bias (incl. the EOG ban for ignoreEos), the chain (penalties,
// top-k, top-p, min-p, temperature, dist/greedy) and, apart from them, the grammar.
//
// As llama.cpp's common sampler (common_sampler_sample with grammar_first = false): the chain
// samples from all candidates first, and the grammar checks only the token it chose; only when
// the grammar rejects it is the chain applied again to the candidates the grammar allows, and a
// token sampled again. A grammar that the model mostly follows costs one single-candidate check
// per token instead of a pass over the whole vocabulary; a resample in a state the grammar's
// program knows (GrammarProgram) costs no grammar pass either (SampleKnown).
//
// Not thread-safe: one thread at a time (the engine hands a sequence's full sampling to its
// sampling thread and does not touch the sampler until the result is back).
class SequenceSampler {
 public:
  // `biases` (logit bias and EOG bans): added to the logits as they are read, as the chain's
  // first sampler would (applied here so that a resample over the allowed tokens finds each
  // token's bias by a merge, not by a search per token).
  // `candidateLimit` > 0: the chain keeps only this many candidates (top-k, or 1 for greedy)
  // after its repetition penalties, so it gets the `candidateLimit` best logits of the tokens
  // nothing changes, every biased token, and (`penaltyLastN` > 0: the chain's penalty window)
  // every token of the last `penaltyLastN` accepted, instead of the whole vocabulary.
  SequenceSampler(SamplerPtr chain, std::vector<llama_logit_bias> biases, std::shared_ptr<GrammarProgram> program,
                  int32_t nVocab, int32_t candidateLimit = 0, int32_t penaltyLastN = 0);

  bool constrained() const { return grammar_ != nullptr; }
  // Whether SampleFast reads only the best logits (candidateLimit).
  bool readsBestOnly() const { return candidateLimit_ > 0; }
  // The chain's choice from `logits` (n_vocab floats) when the grammar accepts it (or there is
  // no grammar): true and *token. False when the grammar rejects it: call SampleKnown, then (if
  // that is false too) SampleFull with the same logits. Accepts nothing.
  bool SampleFast(const float* logits, llama_token* token);
  // The resample when the program already knows the grammar's state: true and *token; false
  // when it does not. Throws as SampleFull. Accepts nothing.
  bool SampleKnown(const float* logits, llama_token* token);
  // The grammar over every candidate (its allowed set kept for the state), then the chain.
  // Throws CodedError(INVALID_GRAMMAR) when the grammar (with the logit bias) leaves no token.
  // Accepts nothing.
  llama_token SampleFull(const float* logits);
  // Advances the grammar and the chain (the penalties' history) past `token`. Throws
  // CodedError(INVALID_GRAMMAR) when the grammar cannot take it.
  void Accept(llama_token token);
  // Copies one row of logits, for a SampleFull after the context has decoded again.
  const float* KeepLogits(const float* logits);
  const float* keptLogits() const { return kept_.data(); }

 private:
  llama_token_data_array Fill(const float* logits);
  // The candidateLimit best logits of the other tokens, every biased token and every token in
  // the penalty window, ordered by id (as Fill's).
  llama_token_data_array FillBest(const float* logits);
  llama_token SampleFrom(const GrammarStateSet& set, const float* logits);
  llama_token Choose(llama_token_data_array* cur);

  SamplerPtr chain_;
  std::vector<llama_logit_bias> biases_;  // by token, one per token
  std::shared_ptr<GrammarProgram> program_;
  GrammarPtr grammar_;
  RuleTable table_;  // grammar_'s
  int32_t nVocab_;
  int32_t candidateLimit_;
  std::vector<llama_token> biasedIds_;  // biases_'s tokens, when candidateLimit_ > 0
  // The penalties' window as llama.cpp's penalties sampler keeps it (the last penaltyLastN_
  // accepted tokens, their counts) and its distinct ids, ascending; kept when candidateLimit_ > 0.
  int32_t penaltyLastN_;
  std::deque<llama_token> recent_;
  std::unordered_map<llama_token, int32_t> recentCount_;
  std::vector<llama_token> recentIds_;
  std::vector<llama_token> skip_;  // biasedIds_ and recentIds_ merged, per sample
  std::vector<llama_token_data> cur_;
  std::vector<float> kept_;
};

// Builds a sequence's sampler; throws CodedError(INVALID_GRAMMAR) naming params.grammar with the
// reason (AnalyzeGrammar). The grammar sampler comes from `grammars` (the model's cache) when
// given, else from a parse of its own.
// `bestLogitsOnly` (EngineOptions::bestLogitsOnly): a chain whose only step before top-k (or
// greedy) is the repetition penalties reads only the best logits (SequenceSampler's
// candidateLimit). `params.repeatLastN` must be resolved (-1 is the caller's context size).
std::unique_ptr<SequenceSampler> BuildSampler(const llama_model* model, const GenerationParams& params,
                                              GrammarCache* grammars = nullptr, bool bestLogitsOnly = true);

// The `k` largest of logits[0, n) (a larger value first comes first among equals) into `out`, in
// no particular order, leaving out the ids in `skip` (ascending). One pass: a block of 16 is
// compared with the k-th best so far at once, and only a block holding a larger value is
// looked at value by value.
void BestLogits(const float* logits, int32_t n, int32_t k, const std::vector<llama_token>& skip,
                std::vector<llama_token_data>* out);

}  // namespace lmserve
