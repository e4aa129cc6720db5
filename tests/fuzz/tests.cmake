# Replays the seed corpus of each keel proxy fuzz target (tests/fuzz/corpus/<target>/) as a CTest
# test in every plain build, the ASan build included, so `make test` runs the corpora without
# libFuzzer or clang.
if(NOT KEEL_FUZZ)
  file(GLOB KEEL_PROXY_FUZZERS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_proxy_*.c)
  foreach(src ${KEEL_PROXY_FUZZERS})
    get_filename_component(name ${src} NAME_WE)
    add_executable(replay_${name} ${src} ${CMAKE_SOURCE_DIR}/tests/fuzz/replay_main.c)
    target_link_libraries(replay_${name} keel)
    set_target_properties(replay_${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
    add_test(NAME replay_${name} COMMAND replay_${name} ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${name})
  endforeach()
endif()
