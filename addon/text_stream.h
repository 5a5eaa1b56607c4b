// Turns a sequence's token pieces into text that is safe to stream: never splits a UTF-8
// character, never shows the beginning of a stop string that may still complete.
#pragma once
#include <string>
#include <vector>

namespace lmserve {

// Length of the longest prefix of `bytes` made of complete UTF-8 characters. Invalid lead
// bytes count as complete (they are passed through rather than held forever).
size_t CompleteUtf8Prefix(const std::string& bytes);

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stops = {});

  // Adds a token's bytes; returns the text that can be emitted now.
  std::string Push(const std::string& piece);
  // True once a stop string matched; the text after it is discarded.
  bool stopped() const { return stopped_; }
  const std::string& matchedStop() const { return matchedStop_; }
  // At the end of generation: whatever was held back (incomplete UTF-8 is dropped only if it
  // can never complete; here we emit it replaced by U+FFFD so no bytes vanish silently).
  std::string Flush();

 private:
  size_t HoldbackForStops(const std::string& text) const;

  std::vector<std::string> stops_;
  std::string pendingBytes_;  // incomplete UTF-8 tail
  std::string pendingText_;   // complete text that might be the start of a stop string
  bool stopped_ = false;
  std::string matchedStop_;
};

}  // namespace lmserve
