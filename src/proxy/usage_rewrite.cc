#include "proxy/usage_rewrite.h"

#include <nlohmann/json.hpp>

namespace kvtier::proxy {

namespace {
using OrderedJson = nlohmann::ordered_json;

// Sets the value in `doc` when it is an object with a usage object.
bool SetCachedTokens(OrderedJson& doc, int64_t cached) {
  if (!doc.is_object()) return false;
  auto usage = doc.find("usage");
  if (usage == doc.end() || !usage->is_object()) return false;
  OrderedJson& details = (*usage)["prompt_tokens_details"];
  if (!details.is_object()) details = OrderedJson::object();
  details["cached_tokens"] = cached;
  return true;
}

std::string Dump(const OrderedJson& doc) {
  return doc.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}
}  // namespace

std::string WithCachedTokens(std::string_view answer, int64_t cached) {
  OrderedJson doc = OrderedJson::parse(answer, nullptr, false);
  if (!SetCachedTokens(doc, cached)) return std::string(answer);
  return Dump(doc);
}

std::string UsageStreamRewriter::Feed(std::string_view bytes) {
  held_.append(bytes);
  std::string out;
  size_t start = 0;
  for (size_t end; (end = held_.find("\n\n", start)) != std::string::npos; start = end + 2) {
    const std::string_view event(held_.data() + start, end + 2 - start);
    constexpr std::string_view kData = "data: ";
    if (event.find("\"usage\"") == std::string_view::npos ||
        event.substr(0, kData.size()) != kData) {
      out.append(event);
      continue;
    }
    const std::string_view payload = event.substr(kData.size(), event.size() - kData.size() - 2);
    OrderedJson doc = OrderedJson::parse(payload, nullptr, false);
    if (SetCachedTokens(doc, cached_)) {
      out.append(kData).append(Dump(doc)).append("\n\n");
    } else {
      out.append(event);
    }
  }
  held_.erase(0, start);
  return out;
}

std::string UsageStreamRewriter::Finish() { return std::exchange(held_, {}); }

}  // namespace kvtier::proxy
