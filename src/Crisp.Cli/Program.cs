return Crisp.Cli.CrispCommand.Run(args);
