# tests/fuzz/tests.cmake - fuzz seed corpora replayed by CTest, so `make test` runs them
# without libFuzzer or clang: each tests/fuzz/fuzz_<t>.c is linked with replay.c into
# replay_fuzz_<t> and run on tests/fuzz/corpus/fuzz_<t>/ (in the ASan build too, where a
# seed that once crashed a target is caught by the sanitizers).
if(NOT KEEL_FUZZ)
  file(GLOB KEEL_FUZZ_REPLAY CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_*.c)
  foreach(src ${KEEL_FUZZ_REPLAY})
    get_filename_component(target ${src} NAME_WE)
    if(IS_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${target})
      add_executable(replay_${target} ${src} ${CMAKE_SOURCE_DIR}/tests/fuzz/replay.c)
      target_link_libraries(replay_${target} keel)
      set_target_properties(replay_${target} PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                                                        ${CMAKE_BINARY_DIR}/tests)
      add_test(NAME replay_${target} COMMAND replay_${target}
                                             ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${target})
      set_tests_properties(replay_${target} PROPERTIES TIMEOUT 300)
    endif()
  endforeach()
endif()
