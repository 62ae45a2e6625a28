# Run by CPack (CPACK_PRE_BUILD_SCRIPTS) on the staged files, before the .deb is made:
# every directory 0755, as Debian policy wants. CMake creates the parents of install
# destinations with mkdir, i.e. through the umask of whoever builds the package, and
# rtbackup (which runs its specs) sets 077 for everything it starts.
file(GLOB_RECURSE rtb_staged LIST_DIRECTORIES true "${CPACK_TEMPORARY_INSTALL_DIRECTORY}/*")
set(rtb_dirs "${CPACK_TEMPORARY_INSTALL_DIRECTORY}")
foreach(path ${rtb_staged})
  if(IS_DIRECTORY "${path}" AND NOT IS_SYMLINK "${path}")
    list(APPEND rtb_dirs "${path}")
  endif()
endforeach()
file(CHMOD ${rtb_dirs} DIRECTORY_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
     WORLD_READ WORLD_EXECUTE)
