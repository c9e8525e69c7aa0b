// Error path of the engine: every native failure is a dwc::Error carrying a code and a
// message a user can act on. The addon turns it into a JS exception (never abort).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace dwc {

enum class ErrorCode { BadArgument, Busy, Released, Numeric, Io, Format, Internal, Cuda };

const char* error_code_name(ErrorCode c);  // "DWC_BAD_ARGUMENT", ...

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace dwc

// DWC_CHECK(cond, code, "argument 'x': expected " << n << " ...");
#define DWC_CHECK(cond, code, msg)                                  \
  do {                                                              \
    if (!(cond)) {                                                  \
      std::ostringstream dwc_os_;                                   \
      dwc_os_ << msg;                                               \
      throw ::dwc::Error(::dwc::ErrorCode::code, dwc_os_.str());    \
    }                                                               \
  } while (0)

#define DWC_ARG_CHECK(cond, msg) DWC_CHECK(cond, BadArgument, msg)
