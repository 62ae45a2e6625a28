# The Debian package: `cpack -G DEB` in the build directory (or `cpack -G DEB -B DIR`)
# builds rtbackup_<version>_<arch>.deb, the way clinic IT installs software:
#
#   /usr/bin/rtbackup, /usr/share/rtbackup/{scripts,environments,deploy}   (the install)
#   /etc/rtbackup/*.toml          the sample environments, as conffiles (dpkg keeps
#                                 the site's edits on upgrade and asks when both changed)
#   /etc/logrotate.d/rtbackup     conffile (deploy/logrotate/rtbackup)
#   /lib/systemd/system/rtbackup-*@.service, .timer     (deploy/systemd, for /usr/bin)
#   /usr/lib/sysusers.d/rtbackup.conf, /usr/lib/tmpfiles.d/rtbackup.conf
#   /usr/share/man/man1/rtbackup.1.gz, /usr/share/doc/rtbackup/{copyright,changelog.gz}
#
# Runtime dependencies on Debian's packages come from dpkg-shlibdeps (the shared
# libraries the binary links) plus the Lua modules the scripts require. The
# maintainer scripts (packaging/debian/) create the rtbackup user and its directories
# and tell systemd about the units; nothing is enabled or started.
#
# Everything here is in the component "deb", which a plain `cmake --install` leaves
# out; the install's own directory-creating step (component "layout") is left out of
# the package, whose tmpfiles entry creates /var/lib/rtbackup with the right owner.

set(RTB_DEB_DIR ${PROJECT_SOURCE_DIR}/packaging/debian)
set(RTB_DEB_GEN ${PROJECT_BINARY_DIR}/packaging)

# Sample environments as conffiles under /etc/rtbackup.
file(GLOB rtb_sample_envs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/environments/*.toml)
install(FILES ${rtb_sample_envs} DESTINATION /etc/rtbackup COMPONENT deb EXCLUDE_FROM_ALL)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/logrotate/rtbackup DESTINATION /etc/logrotate.d
        COMPONENT deb EXCLUDE_FROM_ALL)
set(rtb_conffiles "")
foreach(env ${rtb_sample_envs})
  get_filename_component(name ${env} NAME)
  string(APPEND rtb_conffiles "/etc/rtbackup/${name}\n")
endforeach()
string(APPEND rtb_conffiles "/etc/logrotate.d/rtbackup\n")
file(WRITE ${RTB_DEB_GEN}/conffiles "${rtb_conffiles}")

# The systemd units of deploy/ name /usr/local (a `cmake --install` default); the
# package's binary and documentation are under /usr.
file(GLOB rtb_units CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/deploy/systemd/*.service
     ${PROJECT_SOURCE_DIR}/deploy/systemd/*.timer)
set(rtb_unit_files "")
foreach(unit ${rtb_units})
  get_filename_component(name ${unit} NAME)
  file(READ ${unit} text)
  string(REPLACE "/usr/local/" "/usr/" text "${text}")
  file(WRITE ${RTB_DEB_GEN}/systemd/${name} "${text}")
  list(APPEND rtb_unit_files ${RTB_DEB_GEN}/systemd/${name})
endforeach()
# Debian 12 ships units in /lib/systemd/system (merged /usr: the same directory).
install(FILES ${rtb_unit_files} DESTINATION /lib/systemd/system COMPONENT deb EXCLUDE_FROM_ALL)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/rtbackup.sysusers DESTINATION lib/sysusers.d
        RENAME rtbackup.conf COMPONENT deb EXCLUDE_FROM_ALL)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/rtbackup.tmpfiles DESTINATION lib/tmpfiles.d
        RENAME rtbackup.conf COMPONENT deb EXCLUDE_FROM_ALL)

# copyright and a changelog (Debian's format; a native package's changelog.gz), both
# required by Debian policy. The date is SOURCE_DATE_EPOCH's when set (reproducible).
string(TIMESTAMP rtb_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
set(CPACK_PACKAGE_CONTACT "rtbackup developers <dev@rtbackup.invalid>" CACHE STRING
    "The Maintainer field of the Debian package: who at the site builds and supports it")
file(WRITE ${RTB_DEB_GEN}/changelog
     "rtbackup (${PROJECT_VERSION}) stable; urgency=medium\n\n"
     "  * rtbackup ${PROJECT_VERSION}, packaged with CPack from the rtbackup source tree.\n\n"
     " -- ${CPACK_PACKAGE_CONTACT}  ${rtb_date}\n")
execute_process(COMMAND gzip -9nf ${RTB_DEB_GEN}/changelog)
install(FILES ${RTB_DEB_DIR}/copyright ${RTB_DEB_GEN}/changelog.gz DESTINATION ${CMAKE_INSTALL_DOCDIR}
        COMPONENT deb EXCLUDE_FROM_ALL)

# The manual page, from `rtbackup --help` (help2man, in tools/deps.sh), made when the
# package is built so that it describes the binary inside.
find_program(RTB_HELP2MAN help2man)
if(RTB_HELP2MAN)
  install(CODE "
    execute_process(COMMAND \"${RTB_HELP2MAN}\" --no-info --section 1 --name \"verified DICOM and Mosaiq backups for radiation oncology\"
                            --output \"${RTB_DEB_GEN}/rtbackup.1\" \"$<TARGET_FILE:rtbackup>\"
                    RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR \"help2man failed: \${rc}\")
    endif()
    execute_process(COMMAND gzip -9nf \"${RTB_DEB_GEN}/rtbackup.1\")
    file(INSTALL \"${RTB_DEB_GEN}/rtbackup.1.gz\" DESTINATION \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_MANDIR}/man1\"
         PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  " COMPONENT deb EXCLUDE_FROM_ALL)
else()
  message(STATUS "help2man not found: the Debian package will have no manual page (tools/deps.sh installs it)")
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME rtbackup)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "rtbackup")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "verified DICOM and Mosaiq backups for radiation oncology")
set(CPACK_PACKAGE_DESCRIPTION "rtbackup backs up a radiation-oncology clinic's DICOM archives (ARIA, MIM)
and its Mosaiq treatment database into an Orthanc archive, and proves every
instance arrived. A small C core (DCMTK, unixODBC, libuv) runs the site's
backup, validation and restore workflows, written in Lua 5.4.
.
This package installs the rtbackup command, its Lua scripts, sample
environments in /etc/rtbackup, and systemd units and timers for nightly
backups, health checks and restore drills (none enabled by default).")
# The package installs under /usr whatever CMAKE_INSTALL_PREFIX the build has; absolute
# destinations (/etc, /lib/systemd) go into the package, not onto the build host.
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_SET_DESTDIR ON)
set(CPACK_STRIP_FILES ON)
# Directories 0755 whatever the umask of whoever builds the package (rtbackup itself
# runs with 077, and so does anything it starts, such as the package spec).
set(CPACK_PRE_BUILD_SCRIPTS ${PROJECT_SOURCE_DIR}/packaging/debian-dirs.cmake)
# One package from the default install and the "deb" component.
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ALL_COMPONENTS_IN_ONE)
set(CPACK_COMPONENTS_ALL Unspecified deb)
set(CPACK_DEBIAN_PACKAGE_NAME rtbackup)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Beyond the shared libraries: the Lua modules the scripts require, and what the
# maintainer scripts run (systemd's sysusers and tmpfiles, or their standalone builds).
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "lua-argparse, lua-cjson, systemd | systemd-standalone-sysusers, systemd | systemd-standalone-tmpfiles")
# FreeTDS is the SQL Server driver the sample environments name (Mosaiq); logrotate
# rotates the audit log.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "tdsodbc, logrotate")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "libsqliteodbc, odbc-postgresql, prometheus-node-exporter, dcmtk, orthanc")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${RTB_DEB_GEN}/conffiles ${RTB_DEB_DIR}/postinst ${RTB_DEB_DIR}/prerm ${RTB_DEB_DIR}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
