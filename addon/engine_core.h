// The continuous-batching loop: one llama_context, N sequence slots, one decode thread.
// Pure C++ (no N-API): the AddonEngine wraps it and turns its event batches into JS calls.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "llama.h"
#include "model.h"
#include "sampling.h"
#include "text_stream.h"

namespace lmserve {

using Clock = std::chrono::steady_clock;

struct EngineOptions {
  int32_t slots = 4;           // parallel sequences (WORKER_CONCURRENCY)
  int32_t contextSize = 2048;  // tokens each sequence may hold (prompt + output)
  int32_t batchSize = 512;     // tokens per decode step (generation tokens + prompt chunks)
  int32_t threads = 0;         // 0: one per core useful for math (resolved by ParseEngineOptions)
  int32_t maxQueue = 64;       // requests waiting for a slot before QUEUE_FULL
  bool kvUnified = false;      // one KV buffer shared by all sequences
  int32_t kvSize = 0;          // unified only: total KV cells (0: slots * contextSize); less
                               // oversubscribes memory, and a full cache is then handled per request
  int32_t flashAttention = -1;  // -1 auto (as llama-server), 0 off, 1 on
  // A new request starts from the longest prompt prefix any slot holds (copied into its own
  // sequence), and waits for a prefix another slot is still prefilling. false: only the
  // chosen slot's own cache is reused.
  bool prefixSharing = true;
  // Models with sliding-window attention (gemma 2/3, gpt-oss, cohere2, ...): false (as
  // llama-server) keeps only the window plus a batch of cells per sequence for those layers, so
  // their KV is a fraction and their attention spans the window, not the whole context; a
  // cached prefix is then reused only while the cells its window needs are still there. true:
  // every position is kept for every layer.
  bool swaFull = false;
  // Host memory for prompt states (MiB; 0: none), as llama-server's --cache-ram: a slot about to
  // drop most of what its sequence holds saves that state first, and a later request whose prompt
  // starts with a saved one restores it instead of prefilling it again. Oldest entries go first.
  int32_t promptCacheMiB = 0;
  // A sampler whose chain keeps top-k (or is greedy) after its repetition penalties, with no
  // grammar, reads only the k best logits of each step (one pass over the row; the biased and
  // penalized tokens join them) instead of building llama.cpp's candidate array of the whole
  // vocabulary. false: always the whole array, as llama.cpp's common sampler (the same choices:
  // this is for comparisons and tests).
  bool bestLogitsOnly = true;
  // A step with 8 or more sequences without a grammar samples them on up to `threads` threads
  // (OpenMP, the decode's own pool), a thread per 4 sequences at least; each sequence's tokens
  // are the same either way (its own chain and seed). false: always on the decode thread.
  // ParseEngineOptions' default: true where the build sees a GPU.
  bool parallelSampling = false;
};

// The llama_context_params an engine with `options` creates its context with.
llama_context_params ContextParams(const EngineOptions& options);

// How a request's output leaves the engine.
enum class Delivery {
  Events,  // a Tokens event per step for JS, then Done
  Final,   // nothing per step: the text is collected here and Done carries it
  Direct,  // written per step to the client's connection (DirectOutput), and Done carries the text
};

// A streamed request whose steps the engine writes itself, as HTTP/1.1 chunks on the client's
// socket (a descriptor the service handed to this process), so no JS thread wakes per token.
// Each chunk's payload is `prefix + <text as a JSON string> + afterText`, with the token ids
// (comma-separated) and `afterTokens` after it when `withTokens`. The service builds the three
// strings with its own formatter, so the bytes are the ones it would write itself.
struct DirectOutput {
  int fd = -1;
  std::string prefix, afterText, afterTokens;
  bool withTokens = false;
  bool skipEmpty = true;  // a step whose text is all held back writes nothing
  int32_t coalesceMs = 4;  // least time between two writes after the first
  // State, on the loop thread only.
  std::string text;               // not yet formatted
  std::vector<llama_token> ids;   // their tokens
  std::string unsent;             // formatted bytes the socket did not take yet
  bool wrote = false, broken = false, plainWrite = false;
  Clock::time_point lastWrite;
};

struct EngineEvent {
  enum class Type { Tokens, Done, Error };
  Type type = Type::Tokens;
  uint32_t id = 0;
  // Tokens
  std::string text;
  std::vector<llama_token> tokens;
  // With params.logprobs >= 0: one entry per token of `tokens`, with each token's piece.
  std::vector<TokenLogprob> logprobs;
  std::vector<std::string> pieces;  // the chosen token's, then its alternatives', per entry
  // Done
  std::string finishReason;
  std::string stopString;
  int32_t tokensIn = 0, tokensOut = 0, cachedTokens = 0;
  double queueMs = 0, ttftMs = 0, prefillMs = 0, decodeMs = 0, totalMs = 0;
  // Error
  std::string code, message;
  // Done of a Final or Direct request: the whole text in `text`. Done or Error of a Direct
  // request: `tail`, the formatted bytes its socket had not taken (the service writes them
  // before anything else; empty once the socket failed).
  std::string tail;
};

// One submitted generation.
struct Request {
  uint32_t id = 0;
  Delivery delivery = Delivery::Events;
  std::string output;                    // Final and Direct: every piece of text so far
  std::unique_ptr<DirectOutput> direct;  // Direct only
  std::vector<llama_token> prompt;
  GenerationParams params;
  std::unique_ptr<SequenceSampler> sampler;
  Clock::time_point submitted = Clock::now();
  // Events only: after the first tokens event, tokens are held and leave together at most
  // every eventIntervalMs (0: every step), and always before the request's end.
  int32_t eventIntervalMs = 0;
  bool eventSent = false;
  Clock::time_point lastEvent;
  std::unique_ptr<EngineEvent> held;
};

struct EngineStats {
  int32_t slots = 0, slotsBusy = 0, queued = 0;
  int64_t kvCells = 0, kvUsed = 0;
  double tokensPerSecond = 0;  // generated tokens/s over the last second or so
  uint64_t tokensGenerated = 0, promptTokensProcessed = 0, requestsDone = 0, decodeSteps = 0;
  // Tokens sampled under a grammar: accepted on the fast path (the grammar checked only the
  // chain's choice) or sampled again with the grammar over the whole vocabulary; of the latter,
  // those in a grammar state whose allowed tokens were already known (no grammar pass).
  uint64_t grammarFastSamples = 0, grammarFullSamples = 0, grammarKnownStates = 0;
  // Tokens sampled from the best logits only (EngineOptions::bestLogitsOnly).
  uint64_t bestLogitsSamples = 0;
  // Steps whose sequences were sampled on several threads (EngineOptions::parallelSampling).
  uint64_t parallelSamplingSteps = 0;
  // Decode steps a constrained sequence sat out because its full grammar sampling (on the
  // sampling thread) was not done in time; the other sequences did not wait for it.
  uint64_t grammarSkippedSteps = 0;
  // The model's grammar cache (shared by every engine of the model, so counted per model).
  uint64_t grammarCacheHits = 0, grammarCacheMisses = 0;
  // Prompt prefixes copied from another slot's KV into a new request's sequence, the tokens so
  // copied (not prefilled again), and requests that waited for another slot's prefill of a
  // shared prefix before starting their own.
  uint64_t prefixCopies = 0, prefixTokensCopied = 0, prefixWaits = 0;
  // The host-memory prompt cache (promptCacheMiB): states saved, requests that started from a
  // restored one and the prompt tokens it gave them, entries dropped to stay in the budget, and
  // what it holds now.
  uint64_t promptCacheSaves = 0, promptCacheRestores = 0, promptCacheTokensRestored = 0, promptCacheEvictions = 0;
  uint64_t promptCacheAllocations = 0;  // new state buffers (a save may write a dropped entry's instead)
  int64_t promptCacheBytes = 0, promptCacheEntries = 0;
  double promptCacheMs = 0;  // time the loop spent saving and restoring states
};

using EventSink = std::function<void(std::vector<EngineEvent>&&)>;

class EngineCore {
 public:
  // Creates the llama_context (slow; call off the JS thread). Throws CodedError.
  EngineCore(std::shared_ptr<ModelHandle> model, const EngineOptions& options);
  ~EngineCore();
  EngineCore(const EngineCore&) = delete;
  EngineCore& operator=(const EngineCore&) = delete;

  void Start(EventSink sink);
  // Thread-safe. Throws CodedError (QUEUE_FULL, CONTEXT_OVERFLOW, DISPOSED).
  void Submit(std::unique_ptr<Request> request);
  // Thread-safe; unknown or finished ids are ignored.
  void Cancel(uint32_t id);
  EngineStats Stats() const;
  // Stops the loop and joins the thread. Every request still running or still queued (a
  // cancel requested for it or not) ends with an Error event DISPOSED; the sink receives them
  // before Stop returns. Later submits throw DISPOSED.
  void Stop();

  const EngineOptions& options() const { return options_; }
  // Estimated bytes this engine allocated beyond the model: KV cache, logits and batch arrays.
  int64_t memoryBytes() const { return memoryBytes_; }
  const llama_context* context() const { return ctx_; }
  const std::shared_ptr<ModelHandle>& model() const { return model_; }

 private:
  // Idle -> [Waiting ->] Prefill -> Generating -> Idle. Waiting: admitted, holding the slot
  // without decoding until another slot's prefill has passed the prompt prefix they share.
  enum class SlotState { Idle, Waiting, Prefill, Generating };
  // What happens to a released slot's KV cells.
  enum class SlotCache {
    Keep,   // a prompt cache for the next request sharing the prefix (a request that finished)
    Clear,  // removed (failed, re-queued or stopped: the cells may be partial or invalid)
  };
  struct Slot {
    int32_t seqId = 0;
    SlotState state = SlotState::Idle;
    std::unique_ptr<Request> request;
    std::vector<llama_token> cache;  // tokens of this sequence now in the KV cache
    size_t promptPos = 0;            // next prompt token to feed
    int32_t batchIndex = -1;         // where this slot's logits are in the current batch
    int32_t addedThisStep = 0;       // tokens this slot put into the current batch
    llama_token pending = -1;        // sampled, not yet decoded
    int32_t generated = 0;
    int32_t cachedTokens = 0;
    // The prompt length of the last request that prefilled here (kept after it ends): what
    // `cache` holds beyond it is only that request's output.
    size_t promptLength = 0;
    // A recurrent or hybrid state is saved to the prompt cache when the prefill reaches the
    // prompt's last token (a checkpoint): it is the one state a repeated prompt can start from.
    bool checkpoint = false;
    std::unique_ptr<TextStream> text;
    Clock::time_point admitted, firstToken, promptDone;
    uint64_t admitOrder = 0;
    // Its full grammar sampling runs on the sampling thread (the slot sits out decode steps
    // until the token is back). While set, the loop leaves the slot and its sampler alone.
    bool sampling = false;
    bool cancelAfterSampling = false;
    Clock::time_point samplingDeadline;  // the loop waits for the token until then, no longer
    // Waiting: for slot `waitSlot` while it still runs the same request, until it holds
    // `waitPrefix` tokens of this prompt; after `waitSteps` more steps it prefills itself.
    int32_t waitSlot = -1;
    uint64_t waitOrder = 0;  // the source's admitOrder: a re-admitted source is another request
    size_t waitPrefix = 0;
    int32_t waitSteps = 0;
  };
  struct SampledToken {
    Slot* slot = nullptr;
    llama_token token = -1;
    std::string code, message;  // an error instead of a token
  };

  void Run();
  bool WaitForWork();
  void AdmitPending();
  void CancelRequested();
  // The idle slot for a new request (StartOrWait/StartPrefill then decide what it reuses).
  Slot* PickSlot(const std::vector<llama_token>& prompt);
  // Admitted slots: start prefilling (from the best cached prefix) or wait for a shared one.
  void StartOrWait(Slot& slot);
  // Waiting slots whose prefix is ready, whose source is gone or whose wait is up start prefilling.
  void ResumeWaiting();
  // Sets up a slot's prefill: reuses its own cache or copies a longer prefix from another slot.
  void StartPrefill(Slot& slot);
  // The other slot holding the longest prefix of `prompt` (at most prompt.size() - 1 tokens).
  Slot* FindDonor(const Slot& target, const std::vector<llama_token>& prompt, size_t* length);
  // Replaces `target`'s sequence by `donor`'s first `n` cells. False: the target's cache is empty.
  bool CopyPrefix(Slot& donor, Slot& target, size_t n);
  // A saved state's bytes (AllocateState): not value-initialized, llama.cpp writes every byte;
  // from `mapFrom` bytes on its own populated mapping (`mapped` bytes), else malloc'd.
  struct StateFree {
    size_t mapped;  // no initializer here: unique_ptr value-initializes it (0) in this nested type
    void operator()(uint8_t* p) const;
  };
  using StateBuffer = std::unique_ptr<uint8_t, StateFree>;
  static StateBuffer AllocateState(size_t size, size_t mapFrom);
  // The host-memory prompt cache. SaveState: before a slot keeps only `keep` of its cached tokens,
  // saves its state when that drops at least half of them, unless it keeps its last request's
  // whole prompt (only that request's output would be saved) or an entry already holds that
  // prompt (then only another answer to it would be).
  // BestCached: the entry sharing the longest prefix with `prompt` (at most prompt.size() - 1
  // tokens; worth restoring only when at least a quarter of the entry is used). RestoreState:
  // replaces the slot's sequence by the entry's first `n` tokens; false (the slot cleared) when
  // the state does not load or its window does not hold them.
  struct CachedPrompt {
    std::vector<llama_token> tokens;
    StateBuffer state;
    size_t size = 0;      // bytes of state written
    size_t capacity = 0;  // bytes of the buffer (what the budget counts)
  };
  struct SpareState {
    StateBuffer state;
    size_t capacity = 0;
  };
  // Removes an entry, keeping its buffer (still counted in promptCacheBytes_) for the next save.
  std::list<CachedPrompt>::iterator DropEntry(std::list<CachedPrompt>::iterator entry);
  // A buffer of at least `size` bytes for a new entry (its size in `capacity`): the smallest
  // spare one that fits, else a new one within the budget, after freeing spares and evicting
  // the oldest entries (whose buffer is taken when it fits); null when there is no room.
  StateBuffer TakeState(size_t size, size_t* capacity, uint64_t* evicted);
  void SaveState(Slot& slot, size_t keep);
  void SaveCheckpoints();
  std::list<CachedPrompt>::iterator BestCached(const std::vector<llama_token>& prompt, size_t* length);
  bool RestoreState(Slot& slot, std::list<CachedPrompt>::iterator entry, size_t n);
  // Adds to the cache's counters (a restore: restoredTokens > 0) and sets what it holds now.
  void UpdateCacheStats(double ms, uint64_t saved, uint64_t evicted, size_t restoredTokens = 0);
  void BuildBatch();
  bool DecodeBatch();
  void RollbackBatch();
  bool FreeSpace();
  void SampleAndEmit();
  // Threads that sample a step's `samplers` unconstrained sequences (1: this thread alone).
  int ParallelSamplingThreads(size_t samplers) const;
  // Hands a slot's full grammar sampling (its logits kept in its sampler) to the sampling thread.
  void StartSampling(Slot& slot);
  // Emits the tokens the sampling thread has finished. Waits for those still running until
  // their deadline (all: until every one is back).
  void CollectSampled(bool all);
  void SamplingThread();
  void StopSamplingThread();
  // `logits`: the row the token was sampled from (for its log-probability when asked; may be null).
  void EmitToken(Slot& slot, llama_token token, const float* logits);
  void Finish(Slot& slot, const std::string& reason);
  void FailRequest(Request& request, const std::string& code, const std::string& message);
  // Fails a running slot's request and frees the slot and its KV cells.
  void FailSlot(Slot& slot, const std::string& code, const std::string& message);
  // The one way a slot becomes Idle: resets every per-request field, counts the slot free and
  // keeps or clears its KV cells. Returns the request (to re-queue it, or to drop it).
  std::unique_ptr<Request> ReleaseSlot(Slot& slot, SlotCache cache);
  void ClearCache(Slot& slot);
  // Whether the sequence's cells (after a cut at `end`) still hold what decoding from `end`
  // attends to: all of 0..end-1, or on a sliding-window model the window before `end`.
  bool WindowHolds(int32_t seqId, size_t end) const;
  void DrainOnStop();
  void FlushEvents();
  // Final and Direct requests: keeps a step's text (and its token, unless -1) in the request.
  void KeepOutput(Request& request, const std::string& text, llama_token token);
  // A Direct request's end: writes what is left and returns what its socket did not take.
  std::string TakeDirectTail(Request& request);
  // Direct requests: formats what each stream collected and writes it (coalesced).
  void FlushDirect(bool force);
  void FlushDirect(Request& request, bool force);
  // Moves a request's held tokens event to the step's events; ReleaseDueHeld: of every request
  // whose eventIntervalMs has passed since its last event, and when the step has events at all,
  // of every request that has held its tokens for half its interval (they go along).
  void ReleaseHeld(Request& request);
  void ReleaseDueHeld();
  void UpdateStats(int32_t generatedThisStep);
  int32_t CellsPerSequence() const;

  std::shared_ptr<ModelHandle> model_;
  EngineOptions options_;
  llama_context* ctx_ = nullptr;
  llama_batch batch_{};
  int64_t memoryBytes_ = 0;
  std::vector<Slot> slots_;
  // Positions a sliding-window layer attends back (0: none, or options_.swaFull): a sequence
  // continued at position p needs its cells from p - swaWindow_ on (WindowHolds).
  int32_t swaWindow_ = 0;
  bool sharePrefixes_ = false;  // options_.prefixSharing, on a memory that can copy a prefix
  bool cutsAnywhere_ = true;    // not recurrent or hybrid: a sequence can be cut at any position
  // The prompt cache: oldest first, its bytes, its budget. pendingDonors_: slots whose whole
  // stream a CopyPrefix queued for the next llama_decode (one stream per sequence), which must
  // not be overwritten by a restore before that decode copied them.
  std::list<CachedPrompt> promptCache_;
  std::vector<SpareState> spareStates_;  // buffers of dropped entries, written again by later saves
  uint64_t stateAllocations_ = 0;
  size_t promptCacheBytes_ = 0, promptCacheLimit_ = 0;  // entries' and spares' buffers
  // States from this size on are mapped with their pages populated (LMSERVE_CACHE_MAP_BYTES).
  size_t stateMapFrom_ = size_t{1} << 20;
  std::vector<bool> pendingDonors_;
  uint64_t admitCounter_ = 0;
  std::vector<EngineEvent> events_;
  EventSink sink_;

  mutable std::mutex mutex_;  // guards queue_, cancelIds_, stats_, stopping_
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Request>> queue_;
  std::vector<uint32_t> cancelIds_;
  EngineStats stats_;
  bool stopping_ = false;
  std::atomic<bool> abortDecode_{false};
  std::thread thread_;

  // The sampling thread (started on first use). Jobs: slots whose sampler holds kept logits.
  std::thread samplingThread_;
  std::mutex samplingMutex_;  // guards samplingJobs_, samplingStop_
  std::condition_variable samplingWake_;
  std::deque<Slot*> samplingJobs_;
  bool samplingStop_ = false;
  std::vector<SampledToken> sampled_;  // guarded by mutex_; the loop is woken through wake_
  // One step's sampling (SampleAndEmit), kept to reuse their storage.
  struct SampleStep {
    Slot* slot;
    const float* logits;
    llama_token token = -1;
    std::string code, message;  // an error instead of a token (CatchSamplingError)
  };
  std::vector<SampleStep> steps_;
  int32_t samplingInFlight_ = 0;       // loop thread only
  double decodeMsAvg_ = 0;             // moving average of a decode step, for the wait budget

  // Throughput window
  Clock::time_point windowStart_ = Clock::now();
  uint64_t windowTokens_ = 0;
  int32_t emittedThisStep_ = 0;
};

}  // namespace lmserve
