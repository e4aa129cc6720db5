# Fuzz seed corpora replayed by CTest (so `make test` runs them without libFuzzer): each
# tests/fuzz/fuzz_<t>.c listed here is linked with replay.c into replay_fuzz_<t>, run on
# tests/fuzz/corpus/fuzz_<t>/. Targets are added one by one as their corpora are checked.
if(NOT KEEL_FUZZ)
  foreach(target fuzz_reg_json)
    add_executable(replay_${target} ${CMAKE_SOURCE_DIR}/tests/fuzz/${target}.c
                                    ${CMAKE_SOURCE_DIR}/tests/fuzz/replay.c)
    target_link_libraries(replay_${target} keel)
    set_target_properties(replay_${target} PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                                                      ${CMAKE_BINARY_DIR}/tests)
    add_test(NAME replay_${target} COMMAND replay_${target}
                                           ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${target})
    set_tests_properties(replay_${target} PROPERTIES TIMEOUT 300)
  endforeach()
endif()
