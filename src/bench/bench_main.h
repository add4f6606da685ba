// Entry points of kvtier-bench's subcommands. Each takes the arguments after
// the subcommand name (argv[0] is the subcommand) and returns the exit code.
#pragma once

namespace kvtier::bench {

int StoreMain(int argc, char** argv);   // kvtier-bench store
int ServeMain(int argc, char** argv);   // kvtier-bench serve
int FaultsMain(int argc, char** argv);  // kvtier-bench faults

}  // namespace kvtier::bench
