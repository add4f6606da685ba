#include "store/shared_usage.h"

namespace kvtier {

Result<uint64_t> SharedUsage::Update(const std::function<uint64_t(uint64_t)>& next) {
  uint64_t total = 0;
  Status s = env_->WithFileLock(path_, [&]() -> Status {
    OpenOptions o;
    o.write = o.create = true;
    auto f = env_->Open(path_, o);
    if (!f.ok()) return f.status();
    uint64_t cur = 0;
    iovec v{&cur, sizeof(cur)};
    if (!(*f)->ReadV(0, {&v, 1}).ok()) cur = 0;  // new (empty) counter file
    total = next(cur);
    if (total != cur) {
      iovec w{&total, sizeof(total)};
      KVTIER_RETURN_IF_ERROR((*f)->WriteV(0, {&w, 1}));
    }
    return (*f)->Close();
  });
  if (!s.ok()) return s;
  return total;
}

Result<uint64_t> SharedUsage::Add(int64_t delta) {
  return Update([delta](uint64_t cur) {
    return delta < 0 && cur < static_cast<uint64_t>(-delta) ? 0 : cur + delta;
  });
}

Result<uint64_t> SharedUsage::Read() {
  return Update([](uint64_t cur) { return cur; });
}

Result<uint64_t> SharedUsage::Rebase(uint64_t before, uint64_t measured) {
  return Update([&](uint64_t cur) {
    // Unsigned: what was added since `before` wraps correctly in both directions.
    const uint64_t total = measured + (cur - before);
    return static_cast<int64_t>(total) < 0 ? 0 : total;
  });
}

}  // namespace kvtier
