# tests/sim/tests.cmake - the deterministic Raft simulator (build/keel-sim) and its seed runs.
file(GLOB KEEL_SIM_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/sim/*.c)
add_executable(keel-sim ${KEEL_SIM_SOURCES})
target_link_libraries(keel-sim keel)
set_target_properties(keel-sim PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})

# Seed ranges, split so that `ctest -j` spreads them over cores. Under ASan+UBSan only a
# small range runs, to keep that pass fast.
if(KEEL_SANITIZE)
  set(KEEL_SIM_RANGES "3:1..100" "5:1..60")
  set(KEEL_SIM_BITE_SEEDS "1..3000")
else()
  set(KEEL_SIM_RANGES "3:1..1500" "3:1501..3000" "5:1..1000" "5:1001..2000")
  set(KEEL_SIM_BITE_SEEDS "1..20000")
endif()
foreach(r ${KEEL_SIM_RANGES})
  string(REPLACE ":" ";" parts ${r})
  list(GET parts 0 nodes)
  list(GET parts 1 seeds)
  string(REPLACE ".." "_" tag ${seeds})
  add_test(NAME sim_${nodes}n_${tag} COMMAND keel-sim --nodes ${nodes} --seeds ${seeds})
  set_tests_properties(sim_${nodes}n_${tag} PROPERTIES TIMEOUT 600)
endforeach()

# With stream commands beside the KV workload (--streams): every node's stream and group
# state must agree at every index, through crashes, snapshots and membership changes.
if(KEEL_SANITIZE)
  set(KEEL_SIM_STREAM_RANGES "3:1..60")
else()
  set(KEEL_SIM_STREAM_RANGES "3:1..1000" "5:1..400")
endif()
foreach(r ${KEEL_SIM_STREAM_RANGES})
  string(REPLACE ":" ";" parts ${r})
  list(GET parts 0 nodes)
  list(GET parts 1 seeds)
  string(REPLACE ".." "_" tag ${seeds})
  add_test(NAME sim_streams_${nodes}n_${tag} COMMAND keel-sim --nodes ${nodes} --seeds ${seeds} --streams)
  set_tests_properties(sim_streams_${nodes}n_${tag} PROPERTIES TIMEOUT 600)
endforeach()

# The checks bite: with a deliberately broken rule, some seed in the range must fail (the
# run stops at the first failing seed, which it prints with its trace).
add_test(NAME sim_checks_bite_ack_undurable
         COMMAND keel-sim --nodes 3 --seeds ${KEEL_SIM_BITE_SEEDS} --break ack-undurable --expect-failure)
add_test(NAME sim_checks_bite_vote_any_log
         COMMAND keel-sim --nodes 5 --seeds ${KEEL_SIM_BITE_SEEDS} --break vote-any-log --expect-failure)
add_test(NAME sim_checks_bite_stale_reads
         COMMAND keel-sim --nodes 3 --seeds ${KEEL_SIM_BITE_SEEDS} --stale-reads --expect-failure)
# The request path (server/requests.c) answering a read before its read index is applied.
add_test(NAME sim_checks_bite_request_path
         COMMAND keel-sim --nodes 3 --seeds ${KEEL_SIM_BITE_SEEDS} --break serve-reads-early --expect-failure)

# The request path serving a read it orders before a write only after that write applied
# (the pipelining client's GET then sees the SET sent after it).
add_test(NAME sim_checks_bite_ordered_reads
         COMMAND keel-sim --nodes 3 --seeds ${KEEL_SIM_BITE_SEEDS} --break serve-ordered-late --expect-failure)

# The simulator drives server/requests.c without an event loop: keep it (and everything it
# includes) free of libuv.
add_test(NAME sim_request_path_has_no_libuv
         COMMAND sh -c "d=$(${CMAKE_C_COMPILER} -I${CMAKE_SOURCE_DIR}/src -M ${CMAKE_SOURCE_DIR}/src/server/requests.c) || exit 2; case \"$d\" in */uv.h*) echo 'requests.c includes uv.h'; exit 1;; esac")
