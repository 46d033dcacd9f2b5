from .datamodule import (
                         DATAMODULES,
                         CNNDMDataModule,
                         CommonGenDataModule,
                         E2EDataModule,
                         HealthCareMagicDataModule,
                         TextGenDataModule,
                         XSumDataModule,
)

__all__ = ["TextGenDataModule", "E2EDataModule", "CommonGenDataModule", "CNNDMDataModule", "XSumDataModule",
           "HealthCareMagicDataModule", "DATAMODULES"]
