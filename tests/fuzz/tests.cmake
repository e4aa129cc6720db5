# tests/fuzz/tests.cmake - without libFuzzer, fuzz_stream replays its seed corpus as a test.
if(NOT KEEL_FUZZ)
  foreach(name fuzz_stream)
    add_executable(${name}_replay ${CMAKE_SOURCE_DIR}/tests/fuzz/${name}.c
                                  ${CMAKE_SOURCE_DIR}/tests/fuzz/replay.c)
    target_link_libraries(${name}_replay keel)
    set_target_properties(${name}_replay PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
    add_test(NAME ${name}_corpus COMMAND ${name}_replay ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${name})
  endforeach()
endif()
