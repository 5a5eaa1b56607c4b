// Per-request generation parameters, their one table of names, types, bounds and defaults, and
// the llama.cpp sampler chain built from them.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
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
};

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

// Builds the chain; throws CodedError(INVALID_GRAMMAR) with llama.cpp's parser reason.
SamplerPtr BuildSamplerChain(const llama_model* model, const GenerationParams& params);

// Parses a GBNF grammar; returns an empty string when it is valid, else the parser's reason.
std::string CheckGrammar(const llama_vocab* vocab, const std::string& grammar, const std::string& root);

}  // namespace lmserve
