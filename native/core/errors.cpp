#include "errors.h"

namespace dwc {

const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::BadArgument: return "DWC_BAD_ARGUMENT";
    case ErrorCode::Busy: return "DWC_BUSY";
    case ErrorCode::Released: return "DWC_RELEASED";
    case ErrorCode::Numeric: return "DWC_NUMERIC";
    case ErrorCode::Io: return "DWC_IO";
    case ErrorCode::Format: return "DWC_FORMAT";
    case ErrorCode::Internal: return "DWC_INTERNAL";
    case ErrorCode::Cuda: return "DWC_CUDA";
  }
  return "DWC_INTERNAL";
}

}  // namespace dwc
