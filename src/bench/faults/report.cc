#include "bench/faults/report.h"

#include <fmt/format.h>

#include <map>

namespace kvtier::bench::faults {
namespace {

constexpr size_t kMaxListed = 20;  // failures (per phase) and corruptions listed

// The first kMaxListed failures of each phase, in order.
std::vector<const Failure*> Listed(const std::vector<Failure>& all) {
  std::map<std::string, size_t> per_phase;
  std::vector<const Failure*> out;
  for (const Failure& f : all) {
    if (per_phase[f.phase]++ < kMaxListed) out.push_back(&f);
  }
  return out;
}

nlohmann::json CountersJson(const Counters& c) {
  return {{"blocks_dumped_ok", c.dumped_ok},
          {"dumps_failed", c.dump_failed},
          {"blocks_served", c.served},
          {"served_wrong", c.served_wrong},
          {"loads_failed", c.load_failed},
          {"corrupt_detected", c.corrupt_detected},
          {"lookup_misses", c.missed},
          {"timeouts", c.timeouts},
          {"cancelled_tasks", c.cancelled},
          {"written_after_cancel", c.written_after_cancel},
          {"kills", c.kills},
          {"files_corrupted", c.flips},
          {"workers_crashed", c.crashed},
          {"workers_stuck", c.stuck},
          {"stores_not_opened", c.open_failed},
          {"side_load_runs", c.side_load_runs},
          {"side_load_failed", c.side_load_failed},
          {"stop_s", c.stop_s}};
}

nlohmann::json RatesJson(const FaultRates& r) {
  return {{"write_enospc", r.write_enospc},
          {"write_eio", r.write_eio},
          {"sync_eio", r.sync_eio},
          {"rename_enospc", r.rename_enospc},
          {"read_eio", r.read_eio},
          {"hang", r.hang},
          {"hang_ms", r.hang_ms}};
}

}  // namespace

uint64_t CampaignReport::ServedWrong() const {
  uint64_t n = final.served_wrong;
  for (const PhaseResult& p : phases) n += p.counters.served_wrong;
  return n;
}

bool CampaignReport::Passed() const {
  uint64_t bad = ServedWrong() + Lost();
  for (const PhaseResult& p : phases) {
    bad += p.counters.crashed + p.counters.stuck + p.counters.side_load_failed +
           p.counters.written_after_cancel;
  }
  return bad == 0;
}

nlohmann::json CampaignReport::ToJson() const {
  nlohmann::json j;
  j["command"] = command;
  j["options"] = options;
  j["wall_s"] = wall_s;
  for (const PhaseResult& p : phases) {
    nlohmann::json pj = CountersJson(p.counters);
    pj["name"] = p.spec.name;
    pj["seconds"] = p.wall_s;
    pj["writers"] = p.spec.writers;
    pj["readers"] = p.spec.readers;
    pj["writer_faults"] = RatesJson(p.spec.writer_faults);
    pj["reader_faults"] = RatesJson(p.spec.reader_faults);
    j["phases"].push_back(pj);
  }
  j["final"] = {{"blocks_reported_ok", state->reported_ok.size()},
                {"checked", final.checked},
                {"verified", final.verified},
                {"lost", final.lost},
                {"served_wrong", final.served_wrong},
                {"excluded_corrupted", final.excluded_corrupted},
                {"temp_files_after_open", final.temp_files_after_open}};
  j["served_wrong"] = ServedWrong();
  j["lost"] = Lost();
  j["passed"] = Passed();
  j["failures"] = nlohmann::json::array();
  for (const Failure* f : Listed(state->failures)) {
    j["failures"].push_back({{"phase", f->phase}, {"block", f->index}, {"what", f->what}});
  }
  j["failures_total"] = state->failures.size();
  j["corrupted"] = nlohmann::json::array();
  for (size_t i = 0; i < state->corrupted.size() && i < kMaxListed; ++i) {
    j["corrupted"].push_back(state->corrupted[i]);
  }
  return j;
}

std::string CampaignReport::ToMarkdown() const {
  std::string md = fmt::format("`{}`\n\n", command);
  md +=
      "| phase | s | dumped OK | dumps failed | served | served wrong | loads failed | corrupt "
      "detected | timeouts | tasks cancelled | written after cancel | kills | files corrupted | "
      "crashed | stuck | stop s | side load ok/failed |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const PhaseResult& p : phases) {
    const Counters& c = p.counters;
    md += fmt::format(
        "| {} | {:.0f} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1f} | "
        "{}/{} |\n",
        p.spec.name, p.wall_s, c.dumped_ok, c.dump_failed, c.served, c.served_wrong, c.load_failed,
        c.corrupt_detected, c.timeouts, c.cancelled, c.written_after_cancel, c.kills, c.flips,
        c.crashed, c.stuck, c.stop_s, c.side_load_runs, c.side_load_failed);
  }
  md += fmt::format(
      "\nFinal check (fresh store, no capacity limit): {} distinct blocks reported dumped OK, {} "
      "checked, {} verified, **{} lost**, **{} served wrong**, {} excluded (corrupted by the "
      "campaign), {} temp files left after open.\n\n**{}** (served wrong in all phases: {}, "
      "lost: {}).\n",
      state->reported_ok.size(), final.checked, final.verified, final.lost, final.served_wrong,
      final.excluded_corrupted, final.temp_files_after_open, Passed() ? "PASSED" : "FAILED",
      ServedWrong(), Lost());
  if (!state->failures.empty()) {
    md += "\nFailures:\n\n";
    const auto listed = Listed(state->failures);
    for (const Failure* f : listed) {
      md += fmt::format("- {}: block {}: {}\n", f->phase, f->index, f->what);
    }
    if (state->failures.size() > listed.size()) {
      md += fmt::format("- ... {} more\n", state->failures.size() - listed.size());
    }
  }
  return md;
}

}  // namespace kvtier::bench::faults
