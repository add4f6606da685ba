// BackendSet's changes at run time (add, remove with drain), without sockets.
#include "proxy/backend_set.h"

#include <gtest/gtest.h>

namespace kvtier::proxy {
namespace {

const net::Endpoint kA{"127.0.0.1", 1, ""}, kB{"127.0.0.1", 2, ""}, kC{"127.0.0.1", 3, ""};

TEST(BackendSetChanges, AddAppendsAndRefusesADuplicateOfTheSameRole) {
  BackendSet set({kA}, {kA});
  auto added = set.Add(Role::kPrefill, kB);
  ASSERT_TRUE(added.ok());
  EXPECT_EQ(set.of(Role::kPrefill).size(), 2u);
  EXPECT_EQ(set.of(Role::kPrefill)[1], *added);
  EXPECT_EQ(set.Add(Role::kPrefill, kB).status().code(), Status::Busy("").code());
  EXPECT_EQ(set.of(Role::kDecode).size(), 1u);
  // The new one takes work: it is the least loaded.
  Lease busy(set.of(Role::kPrefill)[0].get(), 100);
  EXPECT_EQ(set.Pick(Role::kPrefill, {}), *added);
}

TEST(BackendSetChanges, RemovalDrainsThenForgetsWhileHoldersKeepTheBackend) {
  BackendSet set({kA, kB, kC}, {kA});
  auto b = set.of(Role::kPrefill)[1];
  auto removing = set.BeginRemove(Role::kPrefill, kB.HostPort());
  ASSERT_TRUE(removing.ok()) << removing.status().ToString();
  EXPECT_EQ(*removing, b);
  EXPECT_TRUE(b->draining());
  for (int i = 0; i < 10; ++i) EXPECT_NE(set.Pick(Role::kPrefill, {}), b);
  EXPECT_EQ(set.HealthyCount(Role::kPrefill), 2);
  EXPECT_EQ(set.BeginRemove(Role::kPrefill, kB.HostPort()).status().code(),
            Status::Busy("").code());
  EXPECT_EQ(set.Add(Role::kPrefill, kB).status().code(), Status::Busy("").code());
  {
    Lease still(b.get(), 5);  // an in-flight request on it
    EXPECT_EQ(b->in_flight_requests(), 1);
  }
  set.Forget(*b);
  EXPECT_EQ(set.of(Role::kPrefill).size(), 2u);
  EXPECT_EQ(b.use_count(), 2);                    // ours and `removing`: the set let go
  EXPECT_TRUE(set.Add(Role::kPrefill, kB).ok());  // may come back
}

TEST(BackendSetChanges, TheLastServingBackendOfARoleStays) {
  BackendSet set({kA, kB}, {kA});
  EXPECT_TRUE(set.BeginRemove(Role::kDecode, kA.HostPort()).status().code() ==
              Status::Aborted("").code());
  EXPECT_TRUE(set.BeginRemove(Role::kDecode, kB.HostPort()).status().IsNotFound());
  ASSERT_TRUE(set.BeginRemove(Role::kPrefill, kA.HostPort()).ok());
  // kA is draining, so kB is the last one serving.
  EXPECT_EQ(set.BeginRemove(Role::kPrefill, kB.HostPort()).status().code(),
            Status::Aborted("").code());
}

}  // namespace
}  // namespace kvtier::proxy
