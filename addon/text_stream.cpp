#include "text_stream.h"

#include <algorithm>

namespace lmserve {

namespace {
// Expected length of a UTF-8 sequence from its lead byte; 0 for a continuation byte.
size_t SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  if ((lead & 0xC0) == 0x80) return 0;
  return 1;  // invalid lead byte: treat as a complete (bad) character
}
}  // namespace

size_t CompleteUtf8Prefix(const std::string& bytes) {
  // Only the last (up to) 3 bytes can belong to an incomplete character.
  size_t n = bytes.size();
  size_t back = std::min<size_t>(n, 4);
  for (size_t i = 1; i <= back; ++i) {
    unsigned char c = static_cast<unsigned char>(bytes[n - i]);
    size_t len = SequenceLength(c);
    if (len == 0) continue;           // continuation byte: keep looking for its lead
    return len > i ? n - i : n;       // lead found: complete iff enough bytes follow it
  }
  return n;  // only continuation bytes in the tail: nothing to wait for
}

TextStream::TextStream(std::vector<std::string> stops) : stops_(std::move(stops)) {
  stops_.erase(std::remove_if(stops_.begin(), stops_.end(), [](const std::string& s) { return s.empty(); }),
               stops_.end());
}

size_t TextStream::HoldbackForStops(const std::string& text) const {
  // Longest suffix of `text` that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& stop : stops_) {
    size_t maxLen = std::min(stop.size() - 1, text.size());
    for (size_t len = maxLen; len > hold; --len) {
      if (text.compare(text.size() - len, len, stop, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  return hold;
}

std::string TextStream::Push(const std::string& piece) {
  if (stopped_) return {};
  pendingBytes_ += piece;
  size_t complete = CompleteUtf8Prefix(pendingBytes_);
  pendingText_.append(pendingBytes_, 0, complete);
  pendingBytes_.erase(0, complete);
  if (stops_.empty()) {
    std::string out;
    out.swap(pendingText_);
    return out;
  }
  size_t best = std::string::npos;
  for (const auto& stop : stops_) {
    size_t at = pendingText_.find(stop);
    if (at != std::string::npos && at < best) {
      best = at;
      matchedStop_ = stop;
    }
  }
  if (best != std::string::npos) {
    stopped_ = true;
    std::string out = pendingText_.substr(0, best);
    pendingText_.clear();
    pendingBytes_.clear();
    return out;
  }
  size_t hold = HoldbackForStops(pendingText_);
  std::string out = pendingText_.substr(0, pendingText_.size() - hold);
  pendingText_.erase(0, pendingText_.size() - hold);
  return out;
}

std::string TextStream::Flush() {
  if (stopped_) return {};
  std::string out;
  out.swap(pendingText_);
  if (!pendingBytes_.empty()) {
    out += "\xEF\xBF\xBD";  // an incomplete character at the very end: U+FFFD
    pendingBytes_.clear();
  }
  return out;
}

}  // namespace lmserve
