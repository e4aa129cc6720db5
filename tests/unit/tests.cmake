# tests/unit/tests.cmake - unit tests that run a real keel server (tests/unit/test_tx_util.h
# starts build/keel): building the test builds the server too, so it never skips silently.
foreach(t test_evstore test_projection test_tx_twopc)
  if(TARGET ${t})
    add_dependencies(${t} keel-bin)
  endif()
endforeach()
