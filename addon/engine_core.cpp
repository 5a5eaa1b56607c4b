#include "engine_core.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <sys/socket.h>
#include <unistd.h>
#endif

#include "errors.h"
#include "log_capture.h"

namespace lmserve {

namespace {

// Runs a sequence's sampling; what it throws becomes `code` and `message` (that slot fails, the
// engine goes on). The loop's own sampling and the sampling thread's full grammar pass share it.
template <typename Work>
void CatchSamplingError(const Work& work, std::string* code, std::string* message) {
  try {
    work();
  } catch (const CodedError& e) {
    *code = e.code();
    *message = e.what();
  } catch (const std::exception& e) {
    *code = codes::kInternal;
    *message = std::string("sampling failed: ") + e.what();
  }
}

double Ms(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

size_t CommonPrefix(const std::vector<llama_token>& a, const std::vector<llama_token>& b) {
  size_t n = std::min(a.size(), b.size()), i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// A slot's own cache is worth choosing it only for a real shared prefix (as llama-server's
// --slot-prompt-similarity 0.1): a lone BOS match is not.
size_t MinOwnReuse(const std::vector<llama_token>& prompt) { return std::max<size_t>(2, prompt.size() / 10 + 1); }

// A prefix is copied from another slot, or waited for, only when it saves at least this many
// prefill tokens. With one KV stream per sequence a copy moves the whole stream (contextSize
// cells of every layer) whatever the prefix length; measured against the prefill it saves, that
// is worth a few tokens' compute on CPU or GPU, so 32 tokens leaves a wide margin.
constexpr size_t kMinSharedPrefix = 32;

// A saved prompt state is restored only when it gives at least this many tokens more than the
// slot's own cache or a copy would: restoring copies the whole state (a memcpy on CPU, a host to
// device copy on a GPU), which costs a small fraction of prefilling the tokens it gives.
constexpr size_t kMinRestoreGain = 8;
// Nor when the prefix it gives is less than an eighth of the state copied for it.
constexpr size_t kMaxRestoreWaste = 8;

// Recurrent and hybrid models: the shortest prompt whose state at its last token is saved to the
// prompt cache (SaveCheckpoints). Below it the prefill costs about what a save and a restore do.
constexpr size_t kMinCheckpoint = 32;

// `text` as a JSON string, as JSON.stringify writes it after V8 decoded the UTF-8: each maximal
// ill-formed subsequence becomes U+FFFD (the WHATWG decoder's rule), `"` `\\` and control
// characters are escaped (\b \f \n \r \t, else \u00xx), everything else is kept.
void AppendJsonString(std::string& out, const std::string& text) {
  static const char* kHex = "0123456789abcdef";
  static const char kReplacement[] = "\xEF\xBF\xBD";
  out.push_back('"');
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20) {
            out += "\\u00";
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
          } else {
            out.push_back(static_cast<char>(c));
          }
      }
      ++i;
      continue;
    }
    // Length and the range of the second byte of a well-formed sequence starting with c.
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (len == 0) {
      out.append(kReplacement, 3);
      ++i;
      continue;
    }
    size_t k = 1;
    while (k < len && i + k < n) {
      unsigned char b = p[i + k];
      unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (b < l || b > h) break;
      ++k;
    }
    if (k == len) {
      out.append(reinterpret_cast<const char*>(p + i), len);
    } else {
      out.append(kReplacement, 3);  // the maximal subpart p[i, i+k) is one replacement
    }
    i += k;
  }
  out.push_back('"');
}

// Formats what a direct stream collected into one HTTP chunk, appended to its unsent bytes.
void FormatDirect(DirectOutput& d) {
  if (d.text.empty() && (d.skipEmpty || d.ids.empty())) {
    d.ids.clear();
    return;
  }
  std::string payload = d.prefix;
  AppendJsonString(payload, d.text);
  payload += d.afterText;
  if (d.withTokens) {
    for (size_t i = 0; i < d.ids.size(); ++i) {
      if (i > 0) payload.push_back(',');
      payload += std::to_string(d.ids[i]);
    }
    payload += d.afterTokens;
  }
  d.text.clear();
  d.ids.clear();
  char size[20];
  int len = std::snprintf(size, sizeof size, "%zx\r\n", payload.size());
  d.unsent.append(size, static_cast<size_t>(len));
  d.unsent += payload;
  d.unsent += "\r\n";
}

// Writes as much of the unsent bytes as the socket takes now, never blocking. A failed socket
// (the client is gone: the service sees that too and cancels) drops the stream's output.
void WriteDirect(DirectOutput& d) {
#if defined(__unix__) || defined(__APPLE__)
  size_t done = 0;
  while (!d.broken && done < d.unsent.size()) {
    const char* data = d.unsent.data() + done;
    size_t size = d.unsent.size() - done;
    ssize_t n;
#if defined(MSG_NOSIGNAL)
    n = d.plainWrite ? ::write(d.fd, data, size) : ::send(d.fd, data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
#else
    n = ::write(d.fd, data, size);
#endif
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == ENOTSOCK && !d.plainWrite) {
      d.plainWrite = true;  // a pipe or file (tests): plain writes
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      d.broken = true;
    }
  }
  if (d.broken) {
    d.unsent.clear();
  } else {
    d.unsent.erase(0, done);
  }
#else
  d.broken = true;
  d.unsent.clear();
#endif
  d.wrote = true;
  d.lastWrite = Clock::now();
}

void BatchAdd(llama_batch& batch, llama_token token, llama_pos pos, llama_seq_id seq, bool logits) {
  int32_t i = batch.n_tokens++;
  batch.token[i] = token;
  batch.pos[i] = pos;
  batch.n_seq_id[i] = 1;
  batch.seq_id[i][0] = seq;
  batch.logits[i] = logits;
}

// What the context and the batch allocate, from public llama.h values only (llama.cpp reports
// no allocation sizes; llama_state_get_size is the size of a saved state, not of the buffers):
// K and V in f16 for every layer and cell, one row of logits per sequence, the batch arrays.
// The compute buffers are left out: they depend on the backend's graph planning.
int64_t EstimateMemory(const llama_model* model, const llama_context* ctx, int32_t batchSize) {
  const int64_t nLayer = llama_model_n_layer(model);
  const int64_t nHead = std::max(1, llama_model_n_head(model));
  const int64_t nEmbdKv = static_cast<int64_t>(llama_model_n_embd(model)) / nHead * llama_model_n_head_kv(model);
  const int64_t kv = 2 * nLayer * static_cast<int64_t>(llama_n_ctx(ctx)) * nEmbdKv * 2;
  const int64_t logits = static_cast<int64_t>(llama_n_seq_max(ctx)) *
                         llama_vocab_n_tokens(llama_model_get_vocab(model)) * static_cast<int64_t>(sizeof(float));
  // llama_batch_init(n, 0, 1): token, pos, n_seq_id, logits, one seq_id pointer (+1) and its array.
  const int64_t batch = static_cast<int64_t>(batchSize) *
                            (sizeof(llama_token) + sizeof(llama_pos) + sizeof(int32_t) + sizeof(int8_t) +
                             sizeof(llama_seq_id*) + sizeof(llama_seq_id)) +
                        static_cast<int64_t>(sizeof(llama_seq_id*));
  return kv + logits + batch;
}

}  // namespace

llama_context_params ContextParams(const EngineOptions& options) {
  llama_context_params cp = llama_context_default_params();
  cp.n_seq_max = static_cast<uint32_t>(options.slots);
  const int64_t cells = options.kvUnified && options.kvSize > 0
                            ? options.kvSize
                            : static_cast<int64_t>(options.contextSize) * options.slots;
  cp.n_ctx = static_cast<uint32_t>(cells);
  cp.n_batch = static_cast<uint32_t>(options.batchSize);
  cp.n_ubatch = static_cast<uint32_t>(std::min(options.batchSize, 512));
  if (options.threads > 0) {
    cp.n_threads = options.threads;
    cp.n_threads_batch = options.threads;
  }
  cp.kv_unified = options.kvUnified;
  cp.swa_full = options.swaFull;
  cp.flash_attn_type = options.flashAttention < 0    ? LLAMA_FLASH_ATTN_TYPE_AUTO
                       : options.flashAttention == 0 ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                                     : LLAMA_FLASH_ATTN_TYPE_ENABLED;
  cp.no_perf = true;
  return cp;
}

EngineCore::EngineCore(std::shared_ptr<ModelHandle> model, const EngineOptions& options)
    : model_(std::move(model)), options_(options) {
  llama_context_params cp = ContextParams(options_);
  cp.abort_callback = [](void* data) { return static_cast<EngineCore*>(data)->abortDecode_.load(); };
  cp.abort_callback_data = this;
  {
    LogCapture capture;
    ctx_ = llama_init_from_model(model_->model(), cp);
    if (ctx_ == nullptr) {
      throw CodedError(codes::kInternal, "llama_init_from_model failed: " + capture.Tail(3));
    }
  }
  batch_ = llama_batch_init(options_.batchSize, 0, 1);
  memoryBytes_ = EstimateMemory(model_->model(), ctx_, options_.batchSize);
  // Recurrent state cannot be cut at a position: a copied prefix would carry the donor's whole
  // history. Those models reuse only their own slot's cache.
  cutsAnywhere_ = !llama_model_is_recurrent(model_->model()) && !llama_model_is_hybrid(model_->model());
  sharePrefixes_ = options_.prefixSharing && cutsAnywhere_;
  swaWindow_ = options_.swaFull ? 0 : std::max(0, llama_model_n_swa(model_->model()));
  promptCacheLimit_ = static_cast<size_t>(std::max(0, options_.promptCacheMiB)) * 1024 * 1024;
  if (const char* v = getenv("LMSERVE_CACHE_MAP_BYTES")) {
    char* end = nullptr;
    const unsigned long long n = strtoull(v, &end, 10);
    if (end != v && *end == '\0') stateMapFrom_ = n == 0 ? SIZE_MAX : static_cast<size_t>(n);
  }
  pendingDonors_.assign(static_cast<size_t>(options_.slots), false);
  slots_.resize(static_cast<size_t>(options_.slots));
  for (size_t i = 0; i < slots_.size(); ++i) slots_[i].seqId = static_cast<int32_t>(i);
  stats_.slots = options_.slots;
  stats_.kvCells = static_cast<int64_t>(cp.n_ctx);
}

EngineCore::~EngineCore() {
  Stop();
  llama_batch_free(batch_);
  if (ctx_ != nullptr) llama_free(ctx_);
}

void EngineCore::Start(EventSink sink) {
  sink_ = std::move(sink);
  thread_ = std::thread([this]() { Run(); });
}

void EngineCore::Submit(std::unique_ptr<Request> request) {
  if (request->prompt.empty()) throw CodedError(codes::kInvalidRequest, "the prompt is empty (no tokens)");
  if (static_cast<int32_t>(request->prompt.size()) >= options_.contextSize) {
    throw CodedError(codes::kContextOverflow,
                     "the prompt has " + std::to_string(request->prompt.size()) +
                         " tokens; the context holds " + std::to_string(options_.contextSize) +
                         " per sequence (prompt + output)");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) throw CodedError(codes::kDisposed, "the engine has been disposed");
  int32_t idle = stats_.slots - stats_.slotsBusy;
  if (static_cast<int32_t>(queue_.size()) >= options_.maxQueue + idle) {
    throw CodedError(codes::kQueueFull, "the queue is full (" + std::to_string(options_.maxQueue) +
                                            " waiting, " + std::to_string(options_.slots) + " slots busy)");
  }
  request->submitted = Clock::now();
  queue_.push_back(std::move(request));
  stats_.queued = static_cast<int32_t>(queue_.size());
  wake_.notify_one();
}

void EngineCore::Cancel(uint32_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  cancelIds_.push_back(id);
  wake_.notify_one();
}

EngineStats EngineCore::Stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  EngineStats out = stats_;
  // The loop updates the rate only while it runs; an idle engine's rate decays here.
  double elapsed = std::chrono::duration<double>(Clock::now() - windowStart_).count();
  if (elapsed >= 2.0) out.tokensPerSecond = static_cast<double>(windowTokens_) / elapsed;
  out.grammarCacheHits = model_->grammarCache().hits();
  out.grammarCacheMisses = model_->grammarCache().misses();
  return out;
}

void EngineCore::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  abortDecode_.store(true);
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int32_t EngineCore::CellsPerSequence() const { return options_.contextSize; }

// ---------------------------------------------------------------------------------------------
// The loop: wait, cancel, admit, build a batch, decode, sample and emit; one step per iteration.

void EngineCore::Run() {
  while (WaitForWork()) {
    emittedThisStep_ = 0;
    CancelRequested();
    CollectSampled(false);
    AdmitPending();
    ResumeWaiting();
    BuildBatch();
    if (batch_.n_tokens > 0) {
      int32_t sitting = 0;
      for (const auto& slot : slots_) sitting += slot.sampling ? 1 : 0;
      if (sitting > 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.grammarSkippedSteps += static_cast<uint64_t>(sitting);
      }
      if (DecodeBatch()) {
        SaveCheckpoints();
        SampleAndEmit();
      }
    }
    FlushDirect(false);
    ReleaseDueHeld();
    FlushEvents();
    UpdateStats(emittedThisStep_);
  }
  DrainOnStop();
  FlushEvents();
}

bool EngineCore::WaitForWork() {
  // Something to decode: a slot that is not waiting for its sampling thread.
  bool decodable = std::any_of(slots_.begin(), slots_.end(),
                               [](const Slot& s) { return s.state != SlotState::Idle && !s.sampling; });
  bool anyIdle = std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.state == SlotState::Idle; });
  std::unique_lock<std::mutex> lock(mutex_);
  if (!decodable) {
    wake_.wait(lock, [&]() {
      return stopping_ || (anyIdle && !queue_.empty()) || !cancelIds_.empty() || !sampled_.empty();
    });
  }
  return !stopping_;
}

void EngineCore::CancelRequested() {
  std::vector<uint32_t> ids;
  std::vector<std::unique_ptr<Request>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ids.swap(cancelIds_);
    for (uint32_t id : ids) {
      auto it = std::find_if(queue_.begin(), queue_.end(), [id](const auto& r) { return r->id == id; });
      if (it != queue_.end()) {
        dropped.push_back(std::move(*it));
        queue_.erase(it);
      }
    }
    stats_.queued = static_cast<int32_t>(queue_.size());
  }
  auto now = Clock::now();
  for (auto& request : dropped) {
    EngineEvent done;
    done.type = EngineEvent::Type::Done;
    done.id = request->id;
    done.finishReason = "cancelled";
    done.tokensIn = static_cast<int32_t>(request->prompt.size());
    done.queueMs = done.totalMs = Ms(request->submitted, now);
    events_.push_back(std::move(done));
  }
  for (auto& slot : slots_) {
    if (slot.state == SlotState::Idle) continue;
    if (std::find(ids.begin(), ids.end(), slot.request->id) == ids.end()) continue;
    if (slot.sampling) {
      slot.cancelAfterSampling = true;  // its sampler is busy: ends when the token is back
    } else {
      Finish(slot, "cancelled");
    }
  }
}

EngineCore::Slot* EngineCore::PickSlot(const std::vector<llama_token>& prompt) {
  // The idle slot whose own cache holds the longest real prefix (MinOwnReuse), else the
  // lowest-numbered idle slot, which keeps busy sequence ids contiguous: with one KV stream per
  // sequence (kv_unified = false) llama_decode splits a batch into one ubatch per run of
  // consecutive sequence ids, and every ubatch is another full pass over the weights.
  const size_t minReuse = MinOwnReuse(prompt);
  Slot* best = nullptr;
  size_t bestPrefix = 0;
  for (auto& slot : slots_) {
    if (slot.state != SlotState::Idle) continue;
    size_t prefix = CommonPrefix(slot.cache, prompt);
    if (prefix < minReuse) prefix = 0;
    if (best == nullptr || prefix > bestPrefix) {
      best = &slot;
      bestPrefix = prefix;
    }
  }
  return best;
}

void EngineCore::AdmitPending() {
  while (true) {
    bool anyIdle = std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.state == SlotState::Idle; });
    if (!anyIdle) return;
    std::unique_ptr<Request> request;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.empty()) return;
      request = std::move(queue_.front());
      queue_.pop_front();
      stats_.queued = static_cast<int32_t>(queue_.size());
      stats_.slotsBusy++;
    }
    Slot* slot = PickSlot(request->prompt);
    // Every other per-request field was reset when the slot was released (ReleaseSlot).
    slot->text = std::make_unique<TextStream>(request->params.stop);
    slot->admitted = Clock::now();
    slot->admitOrder = ++admitCounter_;
    slot->request = std::move(request);
    StartOrWait(*slot);
  }
}

// ---------------------------------------------------------------------------------------------
// Shared prefixes. N requests with the same long system prompt should cost one prefill of it:
// a new request copies the longest prefix any slot's KV holds (busy or idle) into its own
// sequence, and one whose prefix another slot is prefilling right now waits for that instead of
// computing the same cells beside it.

void EngineCore::StartOrWait(Slot& slot) {
  const std::vector<llama_token>& prompt = slot.request->prompt;
  if (sharePrefixes_) {
    size_t own = CommonPrefix(slot.cache, prompt);
    if (own < MinOwnReuse(prompt)) own = 0;
    own = std::min(own, prompt.size() - 1);
    size_t ready = 0;
    FindDonor(slot, prompt, &ready);
    if (promptCacheLimit_ > 0) {
      size_t cached = 0;
      BestCached(prompt, &cached);
      ready = std::max(ready, cached);
    }
    // The prefilling slot whose prompt shares the most with this one, when that is worth a
    // wait (kMinSharedPrefix beyond the slot's own cache) and more than any slot holds now
    // (so that slot has not passed it yet). Even when most of it is already there, the request
    // waits for the rest rather than prefill it beside the source: a step's delay at most, and
    // the shared part is computed once. Only Prefill slots are waited for: they decode every
    // step (oldest admission first), so the wait ends; a Waiting slot is never a source, so
    // waits cannot form a cycle.
    Slot* source = nullptr;
    size_t target = 0;
    for (auto& other : slots_) {
      if (&other == &slot || other.state != SlotState::Prefill) continue;
      const size_t n = std::min(CommonPrefix(other.request->prompt, prompt), prompt.size() - 1);
      if (n >= own + kMinSharedPrefix && n > ready && n > target) {
        source = &other;
        target = n;
      }
    }
    if (source != nullptr) {
      // Keep only the part of its own cache the request could still use (it holds no new cells).
      SaveState(slot, own);
      if (!llama_memory_seq_rm(llama_get_memory(ctx_), slot.seqId, static_cast<llama_pos>(own), -1)) {
        ClearCache(slot);
      }
      slot.cache.resize(std::min(slot.cache.size(), own));
      slot.state = SlotState::Waiting;
      slot.waitSlot = source->seqId;
      slot.waitOrder = source->admitOrder;
      slot.waitPrefix = target;
      // The source gets at least one prompt token a step; it usually gets a whole batch (older
      // admissions' prompts first). Past twice the steps its remaining part needs at full
      // batches, plus two, the request stops waiting and prefills itself.
      const size_t remaining = target - source->cache.size();
      const size_t batch = static_cast<size_t>(options_.batchSize);
      slot.waitSteps = static_cast<int32_t>(2 + 2 * ((remaining + batch - 1) / batch));
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.prefixWaits++;
      return;
    }
  }
  StartPrefill(slot);
}

void EngineCore::ResumeWaiting() {
  for (auto& slot : slots_) {
    if (slot.state != SlotState::Waiting) continue;
    const Slot& source = slots_[static_cast<size_t>(slot.waitSlot)];
    // Gone (finished, cancelled, failed, sent back to the queue): whatever it left in its
    // cache is found by StartPrefill like any other slot's.
    const bool running = source.state != SlotState::Idle && source.admitOrder == slot.waitOrder;
    if (!running || source.cache.size() >= slot.waitPrefix || --slot.waitSteps < 0) StartPrefill(slot);
  }
}

void EngineCore::StartPrefill(Slot& slot) {
  const std::vector<llama_token>& prompt = slot.request->prompt;
  llama_memory_t mem = llama_get_memory(ctx_);
  size_t reuse = CommonPrefix(slot.cache, prompt);
  if (reuse < MinOwnReuse(prompt)) reuse = 0;
  // At least the last prompt token is decoded again: its logits give the first output token.
  reuse = std::min(reuse, prompt.size() - 1);
  // A recurrent state goes on only from its end (llama_memory_seq_rm cannot cut it back): a
  // smaller prefix of it is no reuse, and must not keep a saved state from being restored.
  if (!cutsAnywhere_ && reuse < slot.cache.size()) reuse = 0;
  size_t copyLength = 0;
  Slot* donor = sharePrefixes_ ? FindDonor(slot, prompt, &copyLength) : nullptr;
  if (donor == nullptr || copyLength < reuse + kMinSharedPrefix) copyLength = 0;
  size_t cachedLength = 0;
  // A restore writes the slot's cells at once: not into a stream a queued copy still reads.
  if (promptCacheLimit_ > 0 && !pendingDonors_[static_cast<size_t>(slot.seqId)]) BestCached(prompt, &cachedLength);
  const size_t leastRestore = std::max(reuse, copyLength) + kMinRestoreGain;
  if (cachedLength >= leastRestore) {
    SaveState(slot, 0);
    // Saving may have dropped entries to make room: look again.
    auto entry = BestCached(prompt, &cachedLength);
    reuse = entry != promptCache_.end() && cachedLength >= leastRestore && RestoreState(slot, entry, cachedLength)
                ? cachedLength
                : 0;
    if (reuse == 0) ClearCache(slot);
  } else if (copyLength > 0) {
    SaveState(slot, 0);
    reuse = CopyPrefix(*donor, slot, copyLength) ? copyLength : 0;
    if (reuse > 0 && !options_.kvUnified) pendingDonors_[static_cast<size_t>(donor->seqId)] = true;
  } else {
    SaveState(slot, reuse);
    if (!llama_memory_seq_rm(mem, slot.seqId, static_cast<llama_pos>(reuse), -1) ||
        (reuse > 0 && !WindowHolds(slot.seqId, reuse))) {
      // A memory that cannot cut there (a recurrent state reaches here only whole, as reuse is
      // then its end or 0; this stays as the guard), or a sliding window whose cells before
      // `reuse` were overwritten by later positions (its layers would attend to less than the
      // window): prefill from the start, as llama-server does.
      llama_memory_seq_rm(mem, slot.seqId, -1, -1);
      reuse = 0;
    }
  }
  slot.cache.resize(reuse);
  slot.promptPos = reuse;
  slot.cachedTokens = static_cast<int32_t>(reuse);
  slot.promptLength = prompt.size();
  // A checkpoint where the prompt's last token is next, unless the state starts there already.
  slot.checkpoint = !cutsAnywhere_ && promptCacheLimit_ > 0 && prompt.size() >= kMinCheckpoint && reuse + 1 < prompt.size();
  slot.waitSlot = -1;
  slot.state = SlotState::Prefill;
}

bool EngineCore::WindowHolds(int32_t seqId, size_t end) const {
  const size_t window = static_cast<size_t>(swaWindow_);
  if (!cutsAnywhere_) {
    // A recurrent state (or a hybrid's, whose lowest position is its state's) has one position,
    // its last: it holds the sequence when that is end - 1. A hybrid's attention layers with a
    // window cannot be asked apart from its state: kept only while nothing can have left them.
    if (window > 0 && end > window) return false;
    return end == 0 || llama_memory_seq_pos_max(llama_get_memory(ctx_), seqId) == static_cast<llama_pos>(end) - 1;
  }
  // An iswa memory reports its window layers' lowest position (the full layers hold all).
  const llama_pos lowest = llama_memory_seq_pos_min(llama_get_memory(ctx_), seqId);
  // Without a window (or with swaFull) every position from 0 must be there.
  const auto needed = static_cast<llama_pos>(window > 0 && end > window ? end - window : 0);
  return lowest >= 0 && lowest <= needed;
}

EngineCore::Slot* EngineCore::FindDonor(const Slot& target, const std::vector<llama_token>& prompt, size_t* length) {
  // A slot's `cache` is exactly its sequence's cells here: the phases before BuildBatch only
  // see decoded tokens (a failed step is rolled back, or its slots cleared).
  Slot* best = nullptr;
  size_t bestLength = 0;
  for (auto& slot : slots_) {
    if (&slot == &target) continue;
    const size_t n = std::min(CommonPrefix(slot.cache, prompt), prompt.size() - 1);
    if (n > bestLength) {
      best = &slot;
      bestLength = n;
    }
  }
  *length = bestLength;
  return best;
}

bool EngineCore::CopyPrefix(Slot& donor, Slot& target, size_t n) {
  llama_memory_t mem = llama_get_memory(ctx_);
  const auto end = static_cast<llama_pos>(n);
  if (options_.kvUnified) {
    // One stream: seq_cp only adds the target's id to the donor's cells [0, n); the cells are
    // then shared (no data moves, no new cells) and each sequence's later seq_rm drops only
    // its own id from them.
    llama_memory_seq_rm(mem, target.seqId, -1, -1);
    llama_memory_seq_cp(mem, donor.seqId, target.seqId, 0, end);
  } else {
    // One stream per sequence: llama.cpp (llama_kv_cache::seq_cp) copies across streams only a
    // whole stream (a partial range is a GGML_ASSERT, i.e. an abort). It resets the target
    // stream's cells to the donor's at once and queues the K/V buffer copy, which runs at the
    // start of the next llama_decode, before that batch is computed: the target gets the
    // donor's cells as they are now, even when the donor decodes in that very batch. Then the
    // donor's cells beyond the prefix are dropped from the target.
    llama_memory_seq_cp(mem, donor.seqId, target.seqId, -1, -1);
    llama_memory_seq_rm(mem, target.seqId, end, -1);
  }
  // The cells keep the donor's positions 0..n-1, which are this prompt's positions too. A
  // sliding window whose early cells the donor has already overwritten does not hold what the
  // prefix's continuation attends to: then the request prefills from scratch.
  if (!WindowHolds(target.seqId, n) || llama_memory_seq_pos_max(mem, target.seqId) != end - 1) {
    ClearCache(target);
    return false;
  }
  target.cache.assign(donor.cache.begin(), donor.cache.begin() + static_cast<std::ptrdiff_t>(n));
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.prefixCopies++;
  stats_.prefixTokensCopied += n;
  return true;
}

// ---------------------------------------------------------------------------------------------
// The host-memory prompt cache (as llama-server's --cache-ram). Slots hold what their last
// request left; a slot picked for a prompt that shares little with it would lose that. Its state
// is saved to host memory first, and a later prompt that starts the same way (the same system
// prompt after other clients' requests went through every slot, the next turn of a conversation,
// a repeated request) restores it and prefills only the rest.

void EngineCore::SaveState(Slot& slot, size_t keep) {
  if (promptCacheLimit_ == 0 || slot.cache.empty() || keep * 2 > slot.cache.size()) return;
  // The same prompt again (a repeated request, a retry, another answer to the same question):
  // the slot keeps all of it but its last token, which is decoded again for its logits; what it
  // drops is the last answer only. llama-server does not save a slot it picked for its
  // similarity either. Saving it cost every such admission a ~2-3 ms copy of the whole state on
  // the decode thread (16 clients cycling 32 prompts: most admissions), for an entry whose
  // prompt the slot still holds.
  // (A recurrent state is not cut there: the slot starts again from nothing, and its state is
  // only of use whole.)
  if (cutsAnywhere_ && keep > 0 && keep + 1 >= slot.promptLength) return;
  // An entry that already holds this slot's last prompt: the new entry would add only another
  // answer to it. A load that cycles through a fixed set of prompts (a benchmark, a test suite,
  // many users asking the same) would save every prompt again each time it comes back, each
  // save a fresh allocation the size of the state (from ~2 ms for 7 MB; ~17 ms where the
  // memory is new to this VM), all on the decode thread in the step that admits the request. A
  // conversation that goes on from the newer answer restores the prompt and prefills the rest.
  // Whole, as before, for a recurrent state.
  const size_t needed = cutsAnywhere_ ? std::min(slot.cache.size(), std::max<size_t>(slot.promptLength, 1)) : slot.cache.size();
  for (auto it = promptCache_.begin(); it != promptCache_.end(); ++it) {
    // (A recurrent entry serves only its own end: a longer one holds another state.)
    if ((cutsAnywhere_ ? it->tokens.size() >= needed : it->tokens.size() == needed) &&
        CommonPrefix(it->tokens, slot.cache) >= needed) {
      promptCache_.splice(promptCache_.end(), promptCache_, it);  // asked for again: most recently used
      return;
    }
  }
  const auto start = Clock::now();
  const size_t size = llama_state_seq_get_size_ext(ctx_, slot.seqId, 0);
  if (size == 0 || size > promptCacheLimit_) return;
  for (auto it = promptCache_.begin(); it != promptCache_.end();) {
    // Held whole by the new entry. (Not a recurrent one: the new state is past its end.)
    const bool held = cutsAnywhere_ ? CommonPrefix(it->tokens, slot.cache) == it->tokens.size() : it->tokens == slot.cache;
    it = held ? DropEntry(it) : std::next(it);
  }
  uint64_t evicted = 0;
  CachedPrompt entry;
  entry.state = TakeState(size, &entry.capacity, &evicted);
  const size_t written = entry.state ? llama_state_seq_get_data_ext(ctx_, entry.state.get(), size, slot.seqId, 0) : 0;
  if (written == 0) {
    if (entry.state) spareStates_.push_back({std::move(entry.state), entry.capacity});
    UpdateCacheStats(Ms(start, Clock::now()), 0, evicted);
    return;
  }
  entry.size = written;
  entry.tokens = slot.cache;
  promptCache_.push_back(std::move(entry));
  UpdateCacheStats(Ms(start, Clock::now()), 1, evicted);
}

void EngineCore::SaveCheckpoints() {
  // After a decode: the slots whose prefill stopped just before their prompt's last token. The
  // same prompt again (a retry, a benchmark, a template's fixed opening) then restores this
  // state and decodes that one token; a recurrent state can start from nowhere else.
  for (auto& slot : slots_) {
    if (!slot.checkpoint || slot.state != SlotState::Prefill || slot.promptPos + 1 != slot.request->prompt.size()) continue;
    slot.checkpoint = false;
    SaveState(slot, 0);
  }
}

std::list<EngineCore::CachedPrompt>::iterator EngineCore::DropEntry(std::list<CachedPrompt>::iterator entry) {
  // Its bytes stay counted (promptCacheBytes_) while they wait for the next save.
  spareStates_.push_back({std::move(entry->state), entry->capacity});
  return promptCache_.erase(entry);
}

EngineCore::StateBuffer EngineCore::TakeState(size_t size, size_t* capacity, uint64_t* evicted) {
  // Buffers of entries that were dropped (restored whole, held by a newer entry, evicted) are
  // written again instead of freed and allocated anew: a fresh buffer costs its pages (~2 ms
  // for 7 MB here, 4x the copy itself; ~17 ms where the memory is new to this VM), and a freed
  // mapping a TLB flush on the cores running the decode. Once the cache is full, every save
  // evicts: it then reuses the oldest entry's buffer when that is large enough.
  auto fits = spareStates_.end();
  for (auto it = spareStates_.begin(); it != spareStates_.end(); ++it) {
    if (it->capacity >= size && (fits == spareStates_.end() || it->capacity < fits->capacity)) fits = it;
  }
  if (fits != spareStates_.end()) {
    StateBuffer state = std::move(fits->state);
    *capacity = fits->capacity;
    spareStates_.erase(fits);
    return state;
  }
  // Room for a new buffer: spare buffers go first (largest first), then the oldest entries.
  std::sort(spareStates_.begin(), spareStates_.end(), [](const SpareState& a, const SpareState& b) { return a.capacity < b.capacity; });
  // A new buffer is an eighth larger than this state (in whole pages), so that a later state a
  // few tokens longer still fits in it once this entry is dropped.
  const size_t want = std::max(size, std::min(promptCacheLimit_, (size + size / 8 + 4095) / 4096 * 4096));
  while (promptCacheBytes_ + want > promptCacheLimit_) {
    if (!spareStates_.empty()) {
      promptCacheBytes_ -= spareStates_.back().capacity;
      spareStates_.pop_back();
    } else if (!promptCache_.empty()) {
      CachedPrompt& oldest = promptCache_.front();
      (*evicted)++;
      if (oldest.capacity >= size) {
        // Its buffer stays counted, now for the new entry.
        StateBuffer state = std::move(oldest.state);
        *capacity = oldest.capacity;
        promptCache_.pop_front();
        return state;
      }
      promptCacheBytes_ -= oldest.capacity;
      promptCache_.pop_front();
    } else {
      break;
    }
  }
  if (promptCacheBytes_ + want > promptCacheLimit_) return nullptr;
  StateBuffer state = AllocateState(want, stateMapFrom_);
  if (!state) return nullptr;
  *capacity = want;
  promptCacheBytes_ += want;
  stateAllocations_++;
  return state;
}

std::list<EngineCore::CachedPrompt>::iterator EngineCore::BestCached(const std::vector<llama_token>& prompt,
                                                                      size_t* length) {
  auto best = promptCache_.end();
  size_t bestLength = 0;
  const size_t least = MinOwnReuse(prompt);
  for (auto it = promptCache_.begin(); it != promptCache_.end(); ++it) {
    const size_t n = std::min(CommonPrefix(it->tokens, prompt), prompt.size() - 1);
    if (n < least || n * kMaxRestoreWaste < it->tokens.size()) continue;
    // A recurrent state is only ever continued from its end.
    if (!cutsAnywhere_ && n != it->tokens.size()) continue;
    if (n > bestLength) {
      best = it;
      bestLength = n;
    }
  }
  *length = bestLength;
  return best;
}

EngineCore::StateBuffer EngineCore::AllocateState(size_t size, size_t mapFrom) {
  // A large state is mapped with its pages populated at once: touching fresh memory page by page
  // as llama.cpp writes it cost one fault per 4 KiB (a 4.5 MB state: ~1,100 faults). Measured on
  // the 2-core VM, 16 clients cycling 32 prompts through 16 slots on the bench model: 96 saves
  // and 160 restores took 345-352 ms of the decode thread with malloc, 240-258 ms mapped (a save
  // ~3.0 against ~1.9 ms). From 1 MiB only (LMSERVE_CACHE_MAP_BYTES; 0: never), so an 8 GiB
  // cache stays far below the process's limit of mappings (vm.max_map_count, 65,530 by default).
#ifdef MAP_POPULATE
  if (size >= mapFrom) {
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p != MAP_FAILED) return StateBuffer(static_cast<uint8_t*>(p), StateFree{size});
  }
#endif
  return StateBuffer(static_cast<uint8_t*>(malloc(size)), StateFree{0});
}

void EngineCore::StateFree::operator()(uint8_t* p) const {
#ifdef MAP_POPULATE
  if (mapped > 0) {
    munmap(p, mapped);
    return;
  }
#endif
  free(p);
}

bool EngineCore::RestoreState(Slot& slot, std::list<CachedPrompt>::iterator entry, size_t n) {
  const auto start = Clock::now();
  llama_memory_t mem = llama_get_memory(ctx_);
  const size_t size = entry->size;
  // Replaces the sequence's cells (llama.cpp removes them first); 0 when it did not load (no room
  // in a unified cache, say), with the sequence then emptied.
  if (llama_state_seq_set_data_ext(ctx_, entry->state.get(), size, slot.seqId, 0) != size) {
    ClearCache(slot);
    return false;
  }
  const auto end = static_cast<llama_pos>(n);
  if (!llama_memory_seq_rm(mem, slot.seqId, end, -1) || !WindowHolds(slot.seqId, n) ||
      llama_memory_seq_pos_max(mem, slot.seqId) != end - 1) {
    ClearCache(slot);
    return false;
  }
  slot.cache.assign(entry->tokens.begin(), entry->tokens.begin() + static_cast<std::ptrdiff_t>(n));
  if (n == entry->tokens.size() && cutsAnywhere_) {
    // The slot holds all of it now (and saves it again, with what follows, when it moves on).
    // (A recurrent state moves on past its end: the entry stays, for the next such prompt.)
    DropEntry(entry);
  } else {
    promptCache_.splice(promptCache_.end(), promptCache_, entry);  // most recently used
  }
  UpdateCacheStats(Ms(start, Clock::now()), 0, 0, n);
  return true;
}

void EngineCore::UpdateCacheStats(double ms, uint64_t saved, uint64_t evicted, size_t restoredTokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.promptCacheMs += ms;
  stats_.promptCacheSaves += saved;
  stats_.promptCacheEvictions += evicted;
  if (restoredTokens > 0) {
    stats_.promptCacheRestores++;
    stats_.promptCacheTokensRestored += restoredTokens;
  }
  stats_.promptCacheAllocations = stateAllocations_;
  stats_.promptCacheBytes = static_cast<int64_t>(promptCacheBytes_);
  stats_.promptCacheEntries = static_cast<int64_t>(promptCache_.size());
}

void EngineCore::BuildBatch() {
  batch_.n_tokens = 0;
  for (auto& slot : slots_) {
    slot.batchIndex = -1;
    slot.addedThisStep = 0;
    if (slot.state != SlotState::Generating || slot.sampling) continue;
    slot.batchIndex = batch_.n_tokens;
    BatchAdd(batch_, slot.pending, static_cast<llama_pos>(slot.cache.size()), slot.seqId, true);
    slot.cache.push_back(slot.pending);
    slot.addedThisStep = 1;
  }
  // Prompt chunks fill the rest of the batch, so a long prompt is spread over several steps
  // while the generating sequences keep getting a token per step. Who gets the prompt budget:
  // the oldest admission a quarter of it (it always advances), then the shortest remaining
  // prompts first. A short request that arrives while long prompts prefill is through in a
  // step or two instead of waiting behind all of them (oldest-first gave short requests a p50
  // time to first token of 10.5 s beside 2,000-token prompts; llama-server 1.5 s).
  std::vector<Slot*> prefill;
  for (auto& slot : slots_) {
    if (slot.state == SlotState::Prefill) prefill.push_back(&slot);
  }
  int32_t budget = options_.batchSize - batch_.n_tokens;
  std::vector<std::pair<Slot*, int32_t>> chunks;
  if (!prefill.empty() && budget > 0) {
    auto remaining = [](const Slot* slot) {
      return static_cast<int32_t>(slot->request->prompt.size() - slot->promptPos);
    };
    Slot* oldest = *std::min_element(prefill.begin(), prefill.end(),
                                     [](Slot* a, Slot* b) { return a->admitOrder < b->admitOrder; });
    const int32_t reserved = std::min(remaining(oldest), std::max(1, budget / 4));
    budget -= reserved;
    std::stable_sort(prefill.begin(), prefill.end(), [&](Slot* a, Slot* b) {
      const int32_t ra = remaining(a) - (a == oldest ? reserved : 0);
      const int32_t rb = remaining(b) - (b == oldest ? reserved : 0);
      return ra != rb ? ra < rb : a->admitOrder < b->admitOrder;
    });
    for (Slot* slot : prefill) {
      const int32_t own = slot == oldest ? reserved : 0;
      const int32_t more = std::min(budget, remaining(slot) - own);
      budget -= more;
      if (own + more > 0) chunks.emplace_back(slot, own + more);
    }
  }
  // Batch order by sequence id, so the ubatch split can group consecutive sequences.
  std::sort(chunks.begin(), chunks.end(), [](const auto& a, const auto& b) { return a.first->seqId < b.first->seqId; });
  for (auto [slot, n] : chunks) {
    const auto& prompt = slot->request->prompt;
    // A slot that saves a checkpoint stops before its last prompt token, which the next step
    // decodes (with its logits) after SaveCheckpoints has saved the state in front of it.
    if (slot->checkpoint && slot->promptPos + 1 < prompt.size()) {
      n = std::min(n, static_cast<int32_t>(prompt.size() - 1 - slot->promptPos));
    } else {
      slot->checkpoint = false;
    }
    for (int32_t k = 0; k < n; ++k) {
      llama_token token = prompt[slot->promptPos];
      bool last = slot->promptPos + 1 == prompt.size();
      if (last) slot->batchIndex = batch_.n_tokens;
      BatchAdd(batch_, token, static_cast<llama_pos>(slot->cache.size()), slot->seqId, last);
      slot->cache.push_back(token);
      slot->promptPos++;
    }
    slot->addedThisStep = n;
  }
}

void EngineCore::RollbackBatch() {
  for (auto& slot : slots_) {
    if (slot.addedThisStep == 0) continue;
    slot.cache.resize(slot.cache.size() - static_cast<size_t>(slot.addedThisStep));
    if (slot.state == SlotState::Prefill) slot.promptPos -= static_cast<size_t>(slot.addedThisStep);
    slot.addedThisStep = 0;
    slot.batchIndex = -1;
  }
}

bool EngineCore::DecodeBatch() {
  // llama.cpp logs decode failures (and aborts, which are ours) itself; keep them for our errors.
  LogCapture capture;
  auto start = Clock::now();
  int32_t ret = llama_decode(ctx_, batch_);
  std::fill(pendingDonors_.begin(), pendingDonors_.end(), false);  // the queued copies ran
  if (ret == 0) {
    double ms = Ms(start, Clock::now());
    decodeMsAvg_ = decodeMsAvg_ == 0 ? ms : 0.8 * decodeMsAvg_ + 0.2 * ms;
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.decodeSteps++;
    return true;
  }
  if (ret == 1) {  // no room in the KV cache: memory was restored, make room and try next step
    RollbackBatch();
    if (!FreeSpace()) {
      for (auto& slot : slots_) {
        if (slot.state != SlotState::Idle && !slot.sampling) FailSlot(slot, codes::kKvCacheFull, "the KV cache is full");
      }
    }
    return false;
  }
  if (abortDecode_.load()) return false;  // stopping: DrainOnStop reports the requests
  // Any other failure leaves the sequences in an unknown state: fail them and clear their KV.
  std::string message = "llama_decode failed with status " + std::to_string(ret) + ": " + capture.Tail(2);
  for (auto& slot : slots_) {
    if (slot.addedThisStep != 0 && slot.state != SlotState::Idle) FailSlot(slot, codes::kInternal, message);
  }
  return false;
}

void EngineCore::FailSlot(Slot& slot, const std::string& code, const std::string& message) {
  FailRequest(*slot.request, code, message);
  ReleaseSlot(slot, SlotCache::Clear);
}

std::unique_ptr<Request> EngineCore::ReleaseSlot(Slot& slot, SlotCache cache) {
  // Never while the sampling thread holds the slot's sampler (callers wait for it).
  std::unique_ptr<Request> request = std::move(slot.request);
  slot.sampling = false;
  slot.cancelAfterSampling = false;
  bool wasBusy = slot.state != SlotState::Idle;
  slot.state = SlotState::Idle;
  slot.text.reset();
  slot.promptPos = 0;
  slot.batchIndex = -1;
  slot.addedThisStep = 0;
  slot.pending = -1;
  slot.generated = 0;
  slot.cachedTokens = 0;
  slot.waitSlot = -1;
  slot.waitOrder = 0;
  slot.waitPrefix = 0;
  slot.waitSteps = 0;
  if (cache == SlotCache::Clear) ClearCache(slot);
  if (wasBusy) {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.slotsBusy--;
  }
  return request;
}

void EngineCore::ClearCache(Slot& slot) {
  llama_memory_seq_rm(llama_get_memory(ctx_), slot.seqId, -1, -1);
  slot.cache.clear();
}

// Called when the KV cache has no room for a step. In order: drop the prompt caches kept by
// idle slots; send the newest prefilling request back to the head of the queue (it waits);
// end the longest generating sequence with finish reason "length".
bool EngineCore::FreeSpace() {
  bool freed = false;
  for (auto& slot : slots_) {
    if (slot.state == SlotState::Idle && !slot.cache.empty()) {
      SaveState(slot, 0);
      ClearCache(slot);
      freed = true;
    }
  }
  if (freed) return true;
  int32_t active = 0;
  Slot* newestPrefill = nullptr;
  Slot* longest = nullptr;
  for (auto& slot : slots_) {
    if (slot.state == SlotState::Idle) continue;
    active++;
    if (slot.state == SlotState::Prefill && (newestPrefill == nullptr || slot.admitOrder > newestPrefill->admitOrder)) {
      newestPrefill = &slot;
    }
    if (slot.state == SlotState::Generating && !slot.sampling &&
        (longest == nullptr || slot.cache.size() > longest->cache.size())) {
      longest = &slot;
    }
  }
  if (newestPrefill != nullptr && active > 1) {
    std::unique_ptr<Request> request = ReleaseSlot(*newestPrefill, SlotCache::Clear);
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_front(std::move(request));
    stats_.queued = static_cast<int32_t>(queue_.size());
    return true;
  }
  if (longest != nullptr) {
    Finish(*longest, "length");
    return true;
  }
  if (samplingInFlight_ > 0) {
    // Only sequences on the sampling thread are left to end: take them back, then choose.
    CollectSampled(true);
    return true;
  }
  return false;
}

void EngineCore::SampleAndEmit() {
  // 1. Each slot with logits: its state, and where its logits are (llama_get_logits_ith may
  //    reorder the context's outputs, so it is called here, on this thread only).
  steps_.clear();
  for (auto& slot : slots_) {
    if (slot.batchIndex < 0 || slot.state == SlotState::Idle) continue;
    if (slot.state == SlotState::Prefill) {
      slot.state = SlotState::Generating;
      slot.promptDone = Clock::now();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.promptTokensProcessed += slot.request->prompt.size() - static_cast<size_t>(slot.cachedTokens);
      }
      if (slot.request->params.maxTokens == 0) {
        Finish(slot, "length");
        continue;
      }
    }
    const float* logits = llama_get_logits_ith(ctx_, slot.batchIndex);
    if (logits == nullptr) {
      FailSlot(slot, codes::kInternal, "no logits for the sequence");
      continue;
    }
    steps_.push_back(SampleStep{&slot, logits});
  }

  // 2. The samplers without a grammar choose and accept their tokens: each touches only its own
  //    chain and buffers, so with many of them the work is shared by the decode's threads (the
  //    step's sampling otherwise runs here alone while the compute threads wait). Without
  //    OpenMP, or with one thread, this is a plain loop on this thread.
  const size_t unconstrained = static_cast<size_t>(std::count_if(
      steps_.begin(), steps_.end(), [](const SampleStep& step) { return !step.slot->request->sampler->constrained(); }));
  const int threads = ParallelSamplingThreads(unconstrained);
  const int64_t n = static_cast<int64_t>(steps_.size());
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
  for (int64_t i = 0; i < n; ++i) {
    SampleStep& step = steps_[static_cast<size_t>(i)];
    SequenceSampler& sampler = *step.slot->request->sampler;
    if (sampler.constrained()) continue;
    CatchSamplingError([&] {
      sampler.SampleFast(step.logits, &step.token);
      sampler.Accept(step.token);
    }, &step.code, &step.message);
  }

  // 3. In slot order: the grammar's samplers (as llama.cpp's common sampler: the chain first, the
  //    grammar checks its token), then every token out.
  uint64_t fromBest = 0;
  for (SampleStep& step : steps_) {
    Slot& slot = *step.slot;
    SequenceSampler& sampler = *slot.request->sampler;
    if (sampler.constrained()) {
      bool handedOver = false;
      CatchSamplingError([&] {
        if (sampler.SampleFast(step.logits, &step.token)) {
          std::lock_guard<std::mutex> lock(mutex_);
          stats_.grammarFastSamples++;
        } else if (sampler.SampleKnown(step.logits, &step.token)) {
          // A state the grammar has been in before: its allowed tokens are known, no grammar pass.
          std::lock_guard<std::mutex> lock(mutex_);
          stats_.grammarFullSamples++;
          stats_.grammarKnownStates++;
        } else {
          {
            std::lock_guard<std::mutex> lock(mutex_);
            stats_.grammarFullSamples++;
          }
          // The grammar over the whole vocabulary: on the sampling thread, so that a heavy
          // grammar delays its own sequence, not the batch (nor a request that arrives while
          // it runs). Alone, the loop just waits for it: measured no slower than inline.
          sampler.KeepLogits(step.logits);
          StartSampling(slot);
          handedOver = true;
          return;
        }
        sampler.Accept(step.token);
      }, &step.code, &step.message);
      if (handedOver) continue;
    } else if (sampler.readsBestOnly() && step.message.empty()) {
      fromBest++;
    }
    if (!step.message.empty()) {
      FailSlot(slot, step.code, step.message);
      continue;
    }
    EmitToken(slot, step.token, step.logits);
  }
  if (fromBest > 0 || threads > 1) {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.bestLogitsSamples += fromBest;
    if (threads > 1) stats_.parallelSamplingSteps++;
  }
}

int EngineCore::ParallelSamplingThreads(size_t samplers) const {
  // A thread for every 4 samplers at least (a sample is 15-40 µs: fewer would not pay for the
  // hand-off), at most the decode's own threads (the ones that wait meanwhile). The option is
  // always false in a build without OpenMP (ParseEngineOptions).
  if (samplers < 8 || !options_.parallelSampling) return 1;
  return static_cast<int>(std::min<size_t>(static_cast<size_t>(std::max(1, options_.threads)), samplers / 4));
}

// ---------------------------------------------------------------------------------------------
// The sampling thread: full grammar sampling off the loop's critical path. The loop waits for
// a job until its deadline (a quarter of a decode step, at least 1 ms): a cheap grammar's token
// still joins the next step, a slow one's sequence sits that step out and joins a later one.

void EngineCore::StartSampling(Slot& slot) {
  const double budgetMs = std::max(1.0, 0.25 * decodeMsAvg_);
  slot.sampling = true;
  slot.samplingDeadline = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(budgetMs * 1000));
  samplingInFlight_++;
  {
    std::lock_guard<std::mutex> lock(samplingMutex_);
    samplingJobs_.push_back(&slot);
  }
  if (!samplingThread_.joinable()) samplingThread_ = std::thread([this]() { SamplingThread(); });
  samplingWake_.notify_one();
}

void EngineCore::SamplingThread() {
#if defined(__linux__)
  // LMSERVE_SAMPLING_NICE lowers this thread below the decode threads (on Linux, nice applies
  // per thread). Default 0: on a small machine whose cores the decode threads fill, a lowered
  // thread starved and every constrained sequence waited (json grammar row, 2 cores, one round
  // each: 0.91x / 0.85x of llama-server at c1 / c8 with +10, 0.93x / 0.93x with 0). The loop
  // waits for it at most a quarter of a step either way, so the batch is never held.
  {
    const char* v = std::getenv("LMSERVE_SAMPLING_NICE");
    int increment = v != nullptr && *v != '\0' ? std::atoi(v) : 0;
    const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
    errno = 0;
    int current = getpriority(PRIO_PROCESS, tid);
    if (errno == 0 && increment > 0) setpriority(PRIO_PROCESS, tid, std::min(19, current + increment));
  }
#endif
  while (true) {
    Slot* slot = nullptr;
    {
      std::unique_lock<std::mutex> lock(samplingMutex_);
      samplingWake_.wait(lock, [this]() { return samplingStop_ || !samplingJobs_.empty(); });
      if (samplingStop_) return;
      slot = samplingJobs_.front();
      samplingJobs_.pop_front();
    }
    SampledToken result;
    result.slot = slot;
    CatchSamplingError([&] {
      SequenceSampler& sampler = *slot->request->sampler;
      result.token = sampler.SampleFull(sampler.keptLogits());
      sampler.Accept(result.token);
    }, &result.code, &result.message);
    std::lock_guard<std::mutex> lock(mutex_);
    sampled_.push_back(std::move(result));
    wake_.notify_all();
  }
}

void EngineCore::CollectSampled(bool all) {
  if (samplingInFlight_ == 0) return;
  std::vector<SampledToken> done;
  {
    const Clock::time_point now = Clock::now();
    Clock::time_point until = now;
    for (const auto& slot : slots_) {
      if (slot.sampling) until = std::max(until, slot.samplingDeadline);
    }
    std::unique_lock<std::mutex> lock(mutex_);
    // Ready when every job is back, or (not `all`) every job still within its deadline is.
    auto ready = [&]() {
      if (stopping_ || static_cast<int32_t>(sampled_.size()) >= samplingInFlight_) return true;
      if (all) return false;
      for (const auto& slot : slots_) {
        if (!slot.sampling || slot.samplingDeadline <= now) continue;
        bool back = std::any_of(sampled_.begin(), sampled_.end(), [&](const SampledToken& r) { return r.slot == &slot; });
        if (!back) return false;
      }
      return true;
    };
    if (all) {
      wake_.wait(lock, ready);
    } else {
      wake_.wait_until(lock, until, ready);
    }
    done.swap(sampled_);
  }
  for (auto& result : done) {
    samplingInFlight_--;
    Slot& slot = *result.slot;
    slot.sampling = false;
    if (!result.code.empty()) {
      FailSlot(slot, result.code, result.message);
    } else if (slot.cancelAfterSampling) {
      Finish(slot, "cancelled");
    } else {
      EmitToken(slot, result.token, slot.request->sampler->keptLogits());
    }
  }
}

void EngineCore::StopSamplingThread() {
  {
    std::lock_guard<std::mutex> lock(samplingMutex_);
    samplingStop_ = true;
    samplingJobs_.clear();
  }
  samplingWake_.notify_all();
  if (samplingThread_.joinable()) samplingThread_.join();
  // Whatever it finished is dropped with its slot below.
  std::lock_guard<std::mutex> lock(mutex_);
  sampled_.clear();
  samplingInFlight_ = 0;
}

void EngineCore::EmitToken(Slot& slot, llama_token token, const float* logits) {
  const llama_vocab* vocab = model_->vocab();
  const GenerationParams& params = slot.request->params;
  if (llama_vocab_is_eog(vocab, token) && !params.ignoreEos) {
    Finish(slot, "stop");
    return;
  }
  if (slot.generated == 0) slot.firstToken = Clock::now();
  slot.generated++;
  emittedThisStep_++;
  Request& request = *slot.request;
  std::string text = slot.text->Push(TokenPiece(vocab, token, false));
  if (request.delivery != Delivery::Events) {
    KeepOutput(request, text, token);
  } else {
    EngineEvent ev;
    ev.type = EngineEvent::Type::Tokens;
    ev.id = request.id;
    ev.text = std::move(text);
    ev.tokens.push_back(token);
    if (params.logprobs >= 0 && logits != nullptr) {
      TokenLogprob lp = ComputeLogprob(logits, llama_vocab_n_tokens(vocab), token, params.logprobs);
      ev.pieces.push_back(TokenPiece(vocab, token, true));
      for (const auto& alt : lp.top) ev.pieces.push_back(TokenPiece(vocab, alt.first, true));
      ev.logprobs.push_back(std::move(lp));
    }
    if (request.eventIntervalMs <= 0 || !request.eventSent) {
      events_.push_back(std::move(ev));
      request.eventSent = true;
      request.lastEvent = Clock::now();
    } else if (!request.held) {
      request.held = std::make_unique<EngineEvent>(std::move(ev));
    } else {
      EngineEvent& held = *request.held;
      held.text += ev.text;
      held.tokens.insert(held.tokens.end(), ev.tokens.begin(), ev.tokens.end());
      for (auto& lp : ev.logprobs) held.logprobs.push_back(std::move(lp));
      for (auto& piece : ev.pieces) held.pieces.push_back(std::move(piece));
    }
  }
  if (slot.text->stopped()) {
    Finish(slot, "stop");
  } else if (params.maxTokens >= 0 && slot.generated >= params.maxTokens) {
    Finish(slot, "length");
  } else if (static_cast<int32_t>(slot.cache.size()) >= CellsPerSequence()) {
    Finish(slot, "length");  // no room in this sequence's context for the next token
  } else {
    slot.pending = token;
  }
}

void EngineCore::Finish(Slot& slot, const std::string& reason) {
  auto now = Clock::now();
  Request& request = *slot.request;
  ReleaseHeld(request);
  if (reason != "cancelled") {
    std::string rest = slot.text->Flush();
    if (!rest.empty() && request.delivery != Delivery::Events) {
      KeepOutput(request, rest, -1);
    } else if (!rest.empty()) {
      EngineEvent tail;
      tail.type = EngineEvent::Type::Tokens;
      tail.id = request.id;
      tail.text = std::move(rest);
      events_.push_back(std::move(tail));
    }
  }
  EngineEvent done;
  done.type = EngineEvent::Type::Done;
  done.id = request.id;
  done.finishReason = reason;
  done.stopString = slot.text->matchedStop();
  done.tokensIn = static_cast<int32_t>(request.prompt.size());
  done.tokensOut = slot.generated;
  done.cachedTokens = slot.cachedTokens;
  done.queueMs = Ms(request.submitted, slot.admitted);
  done.ttftMs = slot.generated > 0 ? Ms(request.submitted, slot.firstToken) : 0;
  bool prefilled = slot.state == SlotState::Generating;
  done.prefillMs = prefilled ? Ms(slot.admitted, slot.promptDone) : Ms(slot.admitted, now);
  done.decodeMs = slot.generated > 0 ? Ms(slot.firstToken, now) : 0;
  done.totalMs = Ms(request.submitted, now);
  if (request.delivery != Delivery::Events) done.text = std::move(request.output);
  done.tail = TakeDirectTail(request);
  events_.push_back(std::move(done));

  ReleaseSlot(slot, SlotCache::Keep);
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.requestsDone++;
}

void EngineCore::FailRequest(Request& request, const std::string& code, const std::string& message) {
  ReleaseHeld(request);
  EngineEvent ev;
  ev.type = EngineEvent::Type::Error;
  ev.id = request.id;
  ev.code = code;
  ev.message = message;
  ev.tail = TakeDirectTail(request);
  events_.push_back(std::move(ev));
}

void EngineCore::KeepOutput(Request& request, const std::string& text, llama_token token) {
  request.output += text;
  if (!request.direct) return;
  request.direct->text += text;
  if (token >= 0) request.direct->ids.push_back(token);
}

std::string EngineCore::TakeDirectTail(Request& request) {
  if (!request.direct) return std::string();
  FlushDirect(request, true);
  return std::move(request.direct->unsent);
}

void EngineCore::FlushDirect(bool force) {
  for (auto& slot : slots_) {
    if (slot.state != SlotState::Idle && slot.request && slot.request->direct) FlushDirect(*slot.request, force);
  }
}

void EngineCore::FlushDirect(Request& request, bool force) {
  DirectOutput& d = *request.direct;
  if (d.broken) {
    d.text.clear();
    d.ids.clear();
    return;
  }
  bool collected = !d.text.empty() || !d.ids.empty();
  if (!collected && d.unsent.empty()) return;
  // The first text at once, then at most every coalesceMs (a fast stream: a write per few
  // milliseconds, not per token); the end always.
  if (!force && d.wrote && d.unsent.empty() && Ms(d.lastWrite, Clock::now()) < d.coalesceMs) return;
  FormatDirect(d);
  if (!d.unsent.empty()) WriteDirect(d);
}

void EngineCore::ReleaseHeld(Request& request) {
  if (!request.held) return;
  events_.push_back(std::move(*request.held));
  request.held.reset();
  request.lastEvent = Clock::now();
}

void EngineCore::ReleaseDueHeld() {
  const Clock::time_point now = Clock::now();
  for (auto& slot : slots_) {
    if (slot.state == SlotState::Idle || !slot.request || !slot.request->held) continue;
    Request& request = *slot.request;
    if (Ms(request.lastEvent, now) >= request.eventIntervalMs) ReleaseHeld(request);
  }
  // The step's events wake the JS thread anyway: tokens held for at least half their interval go
  // with them. Streams that start at different times thus fall into one rhythm (they are released
  // together from then on), so N held streams cost one wake-up per interval rather than up to N.
  if (events_.empty()) return;
  for (auto& slot : slots_) {
    if (slot.state == SlotState::Idle || !slot.request || !slot.request->held) continue;
    Request& request = *slot.request;
    if (2 * Ms(request.lastEvent, now) >= request.eventIntervalMs) ReleaseHeld(request);
  }
}

void EngineCore::DrainOnStop() {
  StopSamplingThread();  // the job it runs finishes (bounded by the grammar width limit)
  for (auto& slot : slots_) {
    if (slot.state == SlotState::Idle) continue;
    FailRequest(*slot.request, codes::kDisposed, "the engine was disposed during generation");
    ReleaseSlot(slot, SlotCache::Clear);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& request : queue_) FailRequest(*request, codes::kDisposed, "the engine was disposed before the request ran");
  queue_.clear();
  stats_.queued = 0;
}

void EngineCore::FlushEvents() {
  if (events_.empty()) return;
  std::vector<EngineEvent> out;
  out.swap(events_);
  if (sink_) sink_(std::move(out));
}

void EngineCore::UpdateStats(int32_t generatedThisStep) {
  auto now = Clock::now();
  int64_t used = 0;
  for (const auto& slot : slots_) used += static_cast<int64_t>(slot.cache.size());
  std::lock_guard<std::mutex> lock(mutex_);
  // With kvUnified a copied prefix is one set of cells shared by its sequences, counted here
  // once per sequence: an upper bound, kept within the cache.
  stats_.kvUsed = std::min(used, stats_.kvCells);
  stats_.tokensGenerated += static_cast<uint64_t>(generatedThisStep);
  windowTokens_ += static_cast<uint64_t>(generatedThisStep);
  double elapsed = std::chrono::duration<double>(now - windowStart_).count();
  if (elapsed >= 1.0) {
    stats_.tokensPerSecond = static_cast<double>(windowTokens_) / elapsed;
    windowTokens_ = 0;
    windowStart_ = now;
  } else if (generatedThisStep == 0 && elapsed >= 0.5 && windowTokens_ == 0) {
    stats_.tokensPerSecond = 0;
  }
}

}  // namespace lmserve
