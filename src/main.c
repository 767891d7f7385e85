/* vmrun's entry point: arguments in, exit status out.  The only place that
 * exits. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmrun/cli.h"
#include "vmrun/ctl.h"
#include "vmrun/exit_report.h"
#include "vmrun/exit_status.h"
#include "vmrun/img.h"
#include "vmrun/log.h"
#include "vmrun/migrate.h"
#include "vmrun/snapshot.h"
#include "vmrun/vm.h"

#ifndef VMRUN_VERSION
#define VMRUN_VERSION "unknown"
#endif

/* A closed stdin/stdout/stderr would let /dev/kvm or a socket land on fd
 * 0-2 and receive console bytes; park /dev/null there instead. */
static void ensure_std_fds(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) < 0) {
			int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);

			if (n >= 0 && n != fd) {
				dup2(n, fd);
				close(n);
			}
		}
	}
}

/* --exit-json: @rep (its status, kind, reason and guest times filled in)
 * completed with the total time and the version, written to @path.  A
 * report that cannot be written is an error line; the status stays. */
static void write_exit_json(const char *path, struct exit_report *rep,
			    const struct timespec *start)
{
	struct timespec now;
	char err[512];

	if (!path)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	rep->ms_total = exit_report_ms(start, &now);
	rep->version = VMRUN_VERSION;
	if (exit_report_write(path, rep, err, sizeof(err)))
		log_error("%s", err);
}

/* The report of a run that never started: vmrun failed (@status) for
 * @reason. */
static void exit_report_failure(struct exit_report *rep, int status, const char *reason)
{
	*rep = (struct exit_report){ .status = status, .kind = vmrun_exit_kind(status),
				     .reason = reason, .ms_to_first_instruction = -1,
				     .ms_to_first_output = -1 };
}

int main(int argc, char *argv[])
{
	struct vm_config cfg;
	struct exit_report rep;
	struct snapshot *snap;
	struct migrate_incoming *in;
	struct timespec start;
	struct vm *vm;
	sigset_t sigs;
	char err[512];
	int r, status;

	clock_gettime(CLOCK_MONOTONIC, &start);
	ensure_std_fds();
	signal(SIGPIPE, SIG_IGN);
	if (argc > 1 && !strcmp(argv[1], "ctl"))
		return ctl_main(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "img"))
		return img_main(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "snapshot"))
		return snapshot_main(argc - 1, argv + 1);

	r = cli_parse(argc, argv, &cfg, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "vmrun: %s\n", err);
		return VMRUN_EXIT_USAGE;
	}
	if (r == CLI_HELP) {
		fputs(cli_usage(), stdout);
		return 0;
	}
	if (r == CLI_VERSION) {
		printf("vmrun %s\n", VMRUN_VERSION);
		return 0;
	}
	log_set_quiet(cfg.quiet);
	if (cfg.migration_key && !cfg.incoming &&
	    migrate_check_key(cfg.migration_key, err, sizeof(err))) {
		log_error("%s", err);
		cli_config_free(&cfg);
		return VMRUN_EXIT_SETUP;
	}

	vm = calloc(1, sizeof(*vm));
	snap = cfg.restore_dir ? calloc(1, sizeof(*snap)) : NULL;
	in = cfg.incoming ? calloc(1, sizeof(*in)) : NULL;
	if (!vm || (cfg.restore_dir && !snap) || (cfg.incoming && !in)) {
		log_error("out of memory");
		free(vm);
		free(snap);
		free(in);
		exit_report_failure(&rep, VMRUN_EXIT_SETUP, "out of memory");
		write_exit_json(cfg.exit_json, &rep, &start);
		cli_config_free(&cfg);
		return VMRUN_EXIT_SETUP;
	}
	vm->process_start = start;
	vm->start_paused = cfg.start_paused;
	if (snap) {
		struct snapshot_overrides ov;

		memcpy(ov.disk_base, cfg.restore_disk, sizeof(ov.disk_base));
		memcpy(ov.tap, cfg.restore_tap, sizeof(ov.tap));
		r = snapshot_open(snap, cfg.restore_dir, &cfg, &ov, err, sizeof(err));
		if (r) {
			log_error("%s", err);
			snapshot_close(snap, true);
			free(snap);
			free(vm);
			exit_report_failure(&rep, VMRUN_EXIT_SETUP, err);
			write_exit_json(cfg.exit_json, &rep, &start);
			cli_config_free(&cfg);
			return VMRUN_EXIT_SETUP;
		}
	}
	if (in) {
		/* Waits for the source; its description is the machine. */
		r = migrate_incoming_accept(in, &cfg, err, sizeof(err));
		if (r) {
			log_error("%s", err);
			migrate_incoming_close(in, true);
			free(in);
			free(vm);
			exit_report_failure(&rep, VMRUN_EXIT_SETUP, err);
			write_exit_json(cfg.exit_json, &rep, &start);
			cli_config_free(&cfg);
			return VMRUN_EXIT_SETUP;
		}
		snap = &in->snap;
	}
	r = vm_build(vm, snap ? &snap->cfg : &cfg, snap, err, sizeof(err));
	if (in) {
		if (r)
			migrate_incoming_refuse(in, err);
		else
			r = migrate_incoming_receive(in, vm, err, sizeof(err));
	}
	if (r) {
		log_error("%s", err);
		status = VMRUN_EXIT_SETUP;
		exit_report_failure(&rep, status, err);
	} else {
		/* Block the signals the main loop takes through a signalfd,
		 * and the vCPU kick, before any thread exists (threads inherit
		 * the mask) and only now: during the set-up above, a step that
		 * blocks must still end on SIGINT, SIGTERM or SIGHUP. */
		sigemptyset(&sigs);
		sigaddset(&sigs, SIGINT);
		sigaddset(&sigs, SIGTERM);
		sigaddset(&sigs, SIGHUP);
		sigaddset(&sigs, SIGUSR1);
		pthread_sigmask(SIG_BLOCK, &sigs, NULL);
		status = vm_run(vm);
		vm_exit_report(vm, status, &rep);
		/* The reason lives in @vm, which goes below. */
		snprintf(err, sizeof(err), "%s", rep.reason);
		rep.reason = err;
	}
	vm_destroy(vm);
	free(vm);
	if (in) {
		migrate_incoming_close(in, r != 0);
		free(in);
	} else if (snap) {
		/* A restore that never ran leaves nothing behind. */
		snapshot_close(snap, r != 0);
		free(snap);
	}
	write_exit_json(cfg.exit_json, &rep, &start);
	/* Last: @cfg's strings may live in the --config file's JSON. */
	cli_config_free(&cfg);
	return status;
}
