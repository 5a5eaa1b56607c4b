// Per-request generation parameters and the llama.cpp sampler chain built from them.
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
  uint32_t seed = LLAMA_DEFAULT_SEED;
  bool ignoreEos = false;
  std::vector<std::pair<llama_token, float>> logitBias;
  std::vector<std::string> stop;
  std::string grammar;
  std::string grammarRoot = "root";
};

// Reads and validates params from JS; throws a JS error with code INVALID_REQUEST naming the field.
GenerationParams ParseGenerationParams(Napi::Env env, Napi::Value value, int32_t nVocab);

// Builds the chain; throws CodedError(INVALID_GRAMMAR) with llama.cpp's parser reason.
SamplerPtr BuildSamplerChain(const llama_model* model, const GenerationParams& params);

// Parses a GBNF grammar; returns an empty string when it is valid, else the parser's reason.
std::string CheckGrammar(const llama_vocab* vocab, const std::string& grammar, const std::string& root);

}  // namespace lmserve
