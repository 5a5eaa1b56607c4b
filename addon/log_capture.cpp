#include "log_capture.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "llama.h"

namespace lmserve {

namespace {
thread_local LogCapture* tCurrent = nullptr;

int ThresholdFromEnv() {
  // LMSERVE_LLAMA_LOG: debug|info|warn|error|none (default: error)
  const char* v = std::getenv("LMSERVE_LLAMA_LOG");
  if (v == nullptr) return GGML_LOG_LEVEL_ERROR;
  std::string s(v);
  if (s == "debug") return GGML_LOG_LEVEL_DEBUG;
  if (s == "info") return GGML_LOG_LEVEL_INFO;
  if (s == "warn") return GGML_LOG_LEVEL_WARN;
  if (s == "none") return GGML_LOG_LEVEL_ERROR + 1;
  return GGML_LOG_LEVEL_ERROR;
}

int gThreshold = GGML_LOG_LEVEL_ERROR;
thread_local int gLastLevel = GGML_LOG_LEVEL_INFO;

void OnLog(ggml_log_level level, const char* text, void*) {
  // CONT continues the previous message with its level.
  int effective = level == GGML_LOG_LEVEL_CONT ? gLastLevel : static_cast<int>(level);
  if (level != GGML_LOG_LEVEL_CONT) gLastLevel = level;
  if (tCurrent != nullptr && effective >= GGML_LOG_LEVEL_WARN) AppendCaptured(text);
  // Captured messages become part of an error; printing them too would only duplicate it.
  if (tCurrent == nullptr && effective >= gThreshold && effective != GGML_LOG_LEVEL_NONE) {
    std::fputs(text, stderr);
  }
}
}  // namespace

void AppendCaptured(const char* text) {
  if (tCurrent != nullptr && tCurrent->text_.size() < 64 * 1024) tCurrent->text_ += text;
}

void InstallLogHandler() {
  gThreshold = ThresholdFromEnv();
  llama_log_set(OnLog, nullptr);
}

LogCapture::LogCapture() : previous_(tCurrent) { tCurrent = this; }
LogCapture::~LogCapture() { tCurrent = previous_; }

const std::string& LogCapture::text() const { return text_; }

std::string LogCapture::Tail(size_t maxLines) const {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text_.size()) {
    size_t end = text_.find('\n', start);
    if (end == std::string::npos) end = text_.size();
    std::string line = text_.substr(start, end - start);
    if (!line.empty()) lines.push_back(line);
    start = end + 1;
  }
  std::string out;
  size_t first = lines.size() > maxLines ? lines.size() - maxLines : 0;
  for (size_t i = first; i < lines.size(); ++i) {
    if (!out.empty()) out += "; ";
    out += lines[i];
  }
  return out;
}

}  // namespace lmserve
