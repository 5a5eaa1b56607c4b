// llama.cpp reports parse and load failures through its log callback only. We route that
// callback here: a thread can open a capture scope to collect the messages of one call (to put
// the parser's reason into an error), and everything else goes to stderr above a threshold.
#pragma once
#include <string>

namespace lmserve {

void InstallLogHandler();
void AppendCaptured(const char* text);

class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  // Text logged on this thread at warning level or above since the scope began.
  const std::string& text() const;
  // The last non-empty lines, for error messages.
  std::string Tail(size_t maxLines = 4) const;

 private:
  LogCapture* previous_;
  std::string text_;
  friend void AppendCaptured(const char* text);
};

}  // namespace lmserve
