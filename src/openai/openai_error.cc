#include "openai/openai_error.h"

#include <nlohmann/json.hpp>

namespace kvtier::openai {

std::string OpenAiErrorBody(std::string_view message, std::string_view type, unsigned code) {
  nlohmann::json body = {
      {"error", {{"message", message}, {"type", type}, {"code", code}}},
  };
  // Replace invalid UTF-8 instead of throwing: messages may quote client input.
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string_view OpenAiErrorType(unsigned status) {
  switch (status) {
    case 400:
    case 404:
    case 405:
    case 411:
    case 413:
    case 422:
      return "invalid_request_error";
    case 503:
      return "service_unavailable";
    case 504:
      return "timeout";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

void UseOpenAiErrors(net::ServerOptions& options) {
  options.error_content_type = "application/json";
  options.error_body = [](unsigned status, std::string_view message) {
    return OpenAiErrorBody(message, OpenAiErrorType(status), status);
  };
}

}  // namespace kvtier::openai
