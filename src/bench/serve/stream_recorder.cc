#include "bench/serve/stream_recorder.h"

#include <nlohmann/json.hpp>

namespace kvtier::bench {

namespace {

double Seconds(net::Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Position just after `"key"` `:` and whitespace, or npos.
size_t ValueOf(std::string_view json, std::string_view quoted_key) {
  size_t at = json.find(quoted_key);
  if (at == std::string_view::npos) return at;
  at += quoted_key.size();
  auto skip_ws = [&] {
    while (at < json.size() &&
           (json[at] == ' ' || json[at] == '\t' || json[at] == '\n' || json[at] == '\r')) {
      ++at;
    }
  };
  skip_ws();
  if (at >= json.size() || json[at] != ':') return std::string_view::npos;
  ++at;
  skip_ws();
  if (at < json.size() &&
      json[at] == '[') {  // step inside arrays so callers can test for emptiness
    ++at;
    skip_ws();
  }
  return at < json.size() ? at : std::string_view::npos;
}

}  // namespace

void StreamRecorder::Feed(std::string_view bytes, net::Clock::time_point arrival) {
  while (!bytes.empty()) {
    size_t nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      partial_line_.append(bytes);
      return;
    }
    if (partial_line_.empty()) {
      OnLine(bytes.substr(0, nl), arrival);
    } else {
      partial_line_.append(bytes.substr(0, nl));
      std::string line = std::move(partial_line_);
      partial_line_.clear();
      OnLine(line, arrival);
    }
    bytes.remove_prefix(nl + 1);
  }
}

void StreamRecorder::OnLine(std::string_view line, net::Clock::time_point arrival) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) {
    OnEvent(arrival);
    return;
  }
  if (line.substr(0, 5) != "data:") return;  // comments, event:, id:, retry:
  line.remove_prefix(5);
  if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  if (has_data_) data_.push_back('\n');
  data_.append(line);
  has_data_ = true;
}

void StreamRecorder::OnEvent(net::Clock::time_point arrival) {
  if (!has_data_) return;
  std::string_view data = data_;
  if (data != "[DONE]") {
    size_t choices = ValueOf(data, "\"choices\"");
    if (choices != std::string_view::npos && data[choices] != ']') {
      if (chunks_++ == 0) {
        ttft_ = Seconds(arrival - sent_);
      } else {
        itl_.push_back(Seconds(arrival - last_));
      }
      last_ = arrival;
    } else if (size_t usage = ValueOf(data, "\"usage\"");
               usage != std::string_view::npos && data[usage] == '{') {
      auto json = nlohmann::json::parse(data, nullptr, false);
      if (json.is_object() && json["usage"].is_object()) {
        const auto& u = json["usage"];
        if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer()) {
          usage_completion_tokens_ = u["completion_tokens"].get<int>();
        }
        if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer()) {
          usage_prompt_tokens_ = u["prompt_tokens"].get<int>();
        }
      }
    }
  }
  data_.clear();
  has_data_ = false;
}

void StreamRecorder::Finish(RequestOutput& out) {
  if (!partial_line_.empty()) {  // a last line without its newline
    std::string line = std::move(partial_line_);
    partial_line_.clear();
    OnLine(line, last_);
  }
  OnEvent(last_);
  out.ttft = ttft_;
  out.itl = std::move(itl_);
  out.latency = Seconds(last_ - sent_);
  out.output_tokens = usage_completion_tokens_ >= 0 ? usage_completion_tokens_ : chunks_;
  if (usage_prompt_tokens_ >= 0) out.prompt_len = usage_prompt_tokens_;
  out.success = chunks_ > 0;
  if (!out.success && out.error.empty()) {
    out.error = "Never received a valid chunk to calculate TTFT.";
  }
}

}  // namespace kvtier::bench
